"""Reference app ``auth_jwt_csrf`` for probatorium.

A Starlette application with three authentication/anti-forgery layers:

* JWT HS256 bearer tokens (PyJWT): ``POST /login`` issues a token whose ``sid``
  claim names a server-side session; protected routes need
  ``Authorization: Bearer <token>``. Only ``HS256`` is accepted: ``alg: none``,
  RS*/ES*/PS* (key confusion), other HMAC sizes, forged signatures, expired
  tokens and tokens of a logged-out session answer 401.
* CSRF synchronizer token: ``GET /csrf`` returns a token stored server-side
  with the session; every state-changing request (POST/PUT/PATCH/DELETE, except
  ``/login`` and the API-key routes) must carry it in ``X-CSRF-Token``, else 403.
  No maintained ASGI package implements the *synchronizer* pattern (asgi-csrf,
  starlette-csrf and fastapi-csrf-protect are double-submit cookie schemes), so
  this middleware is written here.
* API keys on ``/api/keyed/*`` (``X-API-Key``), issued by ``POST /api/keys`` or
  given in ``REFAPP_API_KEYS``.

Self-checks (defence in depth): every protected handler re-verifies the token
itself; if a token the middleware should have refused ever reaches it, the
answer is 500 ``{"x-invariant": "I-MW-JWT"}``. Every state-changing handler
re-verifies the CSRF token; a state change without a valid one answers 500
``{"x-invariant": "I-MW-CSRF"}``. Nothing else answers 5xx by design.

Run on its own::

    python app.py [--port N] [--engine uvicorn|uvicorn-h11|hypercorn|granian|daphne]

State lives in process memory: run ONE worker per server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import os
import secrets
import sys
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common.contract import (  # noqa: E402
    check_text,
    EchoEndpoint,
    ExemptPathDispatcher,
    healthz,
    http_error,
    read_json_object,
    RequestCounter,
    route_path,
    SelfChecks,
)
from refapp_common.runner import main  # noqa: E402
from refapp_common import probes  # noqa: E402

# --------------------------------------------------------------------------
# configuration (environment)
# --------------------------------------------------------------------------

#: HS256 secret. Random per process unless given (tests set it to mint tokens).
JWT_SECRET = os.environ.get("REFAPP_JWT_SECRET") or secrets.token_urlsafe(32)
JWT_ALGORITHM = "HS256"
JWT_TTL_S = int(os.environ.get("REFAPP_JWT_TTL", "3600"))
JWT_ISSUER = "probatorium-refapp"
JWT_LEEWAY_S = 0

#: Static API keys ("," separated), owned by the pseudo-user "static".
STATIC_API_KEYS = [k.strip() for k in os.environ.get("REFAPP_API_KEYS", "").split(",") if k.strip()]

MAX_CREDENTIAL = 256
MAX_TITLE = 200
MAX_NOTE_BODY = 2000
MAX_SESSIONS = 10_000
MAX_NOTES_PER_USER = 500
MAX_NOTES_TOTAL = 100_000
MAX_KEYS_PER_USER = 20
MAX_KEYS_TOTAL = 20_000

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "x-csrf-token"
API_KEY_HEADER = "x-api-key"

# --------------------------------------------------------------------------
# process-wide observable state (/debug/vars)
# --------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.rejected: Counter[str] = Counter()


STATS = _Stats()
#: How many times each handler-side re-verification compared (debug endpoint ``self_checks``).
SELF_CHECKS = SelfChecks("I-MW-JWT", "I-MW-CSRF")

# --------------------------------------------------------------------------
# in-memory data (single process, single event loop: no locking needed)
# --------------------------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()  # sid -> {user, csrf}
        self.notes: dict[int, dict[str, Any]] = {}
        self.note_owner: dict[int, str] = {}
        self.owner_notes: dict[str, dict[int, None]] = {}
        self.api_keys: dict[str, dict[str, Any]] = {}  # sha256(key) -> {id, user}
        self.user_keys: dict[str, int] = {}
        self._note_ids = itertools.count(1)
        self._key_ids = itertools.count(1)
        for key in STATIC_API_KEYS:
            self.add_key("static", key)

    # sessions ------------------------------------------------------------
    def new_session(self, user: str) -> str:
        sid = secrets.token_urlsafe(18)
        self.sessions[sid] = {"user": user, "csrf": None}
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return sid

    def session(self, sid: str) -> dict[str, Any] | None:
        sess = self.sessions.get(sid)
        if sess is not None:
            self.sessions.move_to_end(sid)
        return sess

    # notes ---------------------------------------------------------------
    def list_notes(self, owner: str) -> list[dict[str, Any]]:
        return [self.notes[i] for i in self.owner_notes.get(owner, ())]

    def get_note(self, owner: str, nid: int) -> dict[str, Any]:
        if self.note_owner.get(nid) != owner:
            raise HTTPException(404, "no such note")
        return self.notes[nid]

    def create_note(self, owner: str, title: str, body: str) -> dict[str, Any]:
        owned = self.owner_notes.setdefault(owner, {})
        if len(owned) >= MAX_NOTES_PER_USER or len(self.notes) >= MAX_NOTES_TOTAL:
            if not owned:
                del self.owner_notes[owner]
            raise HTTPException(403, "note quota exceeded")
        nid = next(self._note_ids)
        note = {"id": nid, "title": title, "body": body, "owner": owner}
        self.notes[nid] = note
        self.note_owner[nid] = owner
        owned[nid] = None
        return note

    def delete_note(self, owner: str, nid: int) -> None:
        self.get_note(owner, nid)
        del self.notes[nid]
        del self.note_owner[nid]
        owned = self.owner_notes[owner]
        owned.pop(nid, None)
        if not owned:
            del self.owner_notes[owner]

    # api keys ------------------------------------------------------------
    def add_key(self, user: str, key: str) -> dict[str, Any]:
        if self.user_keys.get(user, 0) >= MAX_KEYS_PER_USER or len(self.api_keys) >= MAX_KEYS_TOTAL:
            raise HTTPException(403, "api key quota exceeded")
        rec = {"id": next(self._key_ids), "user": user}
        self.api_keys[_key_hash(key)] = rec
        self.user_keys[user] = self.user_keys.get(user, 0) + 1
        return rec

    def key_record(self, key: str) -> dict[str, Any] | None:
        return self.api_keys.get(_key_hash(key))


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


STORE = Store()

# --------------------------------------------------------------------------
# JWT (PyJWT)
# --------------------------------------------------------------------------


def issue_token(user: str, sid: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "sid": sid, "iat": now, "nbf": now, "exp": now + JWT_TTL_S,
              "iss": JWT_ISSUER, "jti": secrets.token_hex(8)}
    return jwt.encode(claims, JWT_SECRET, algorithm=JWT_ALGORITHM)


class TokenRejected(Exception):
    pass


def verify_token(token: str) -> dict[str, Any]:
    """The claims of a valid HS256 token of a live session, else TokenRejected (reason)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenRejected("malformed token") from None
    if header.get("alg") != JWT_ALGORITHM:
        # "none", RS256/ES256 (key confusion), HS384/HS512...: never accepted
        raise TokenRejected(f"algorithm {str(header.get('alg'))[:20]!r} not accepted")
    try:
        claims = jwt.decode(
            token, JWT_SECRET, algorithms=[JWT_ALGORITHM], issuer=JWT_ISSUER, leeway=JWT_LEEWAY_S,
            options={"require": ["sub", "sid", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRejected("bad signature") from None
    except jwt.PyJWTError as e:
        raise TokenRejected(f"invalid token: {type(e).__name__}") from None
    sub, sid = claims.get("sub"), claims.get("sid")
    if not isinstance(sub, str) or not sub or not isinstance(sid, str):
        raise TokenRejected("invalid claims")
    sess = STORE.session(sid)
    if sess is None or sess["user"] != sub:
        raise TokenRejected("session ended")
    return claims


def bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k.lower() == b"authorization":
            scheme, _, cred = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                return cred.strip()
            return None
    return None


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def _json_error(status: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": msg}, status_code=status, headers=headers)


def invariant(inv: str, detail: str) -> JSONResponse:
    return JSONResponse({"x-invariant": inv, "error": detail}, status_code=500)


# --------------------------------------------------------------------------
# middlewares (pure ASGI)
# --------------------------------------------------------------------------

PUBLIC_GUARDED = frozenset({"/login"})  # behind the guard stack, no auth needed


class JWTAuthMiddleware:
    """Bearer JWT on every route but /login and /api/keyed/*: 401 otherwise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or path in PUBLIC_GUARDED or path.startswith("/api/keyed/") \
                or path == "/api/keyed":
            await self.app(scope, receive, send)
            return
        token = bearer(scope.get("headers", []))
        if token is None:
            STATS.rejected["jwt_missing"] += 1
            resp = _json_error(401, "bearer token required", {"WWW-Authenticate": 'Bearer realm="refapp"'})
            await resp(scope, receive, send)
            return
        try:
            claims = verify_token(token)
        except TokenRejected as e:
            STATS.rejected["jwt_invalid"] += 1
            resp = _json_error(401, str(e), {"WWW-Authenticate": 'Bearer realm="refapp", error="invalid_token"'})
            await resp(scope, receive, send)
            return
        scope["jwt"] = {"token": token, "claims": claims}
        await self.app(scope, receive, send)


class CSRFSynchronizerMiddleware:
    """State-changing requests must carry the session's synchronizer token (403 otherwise).

    Runs after JWTAuthMiddleware (the session id comes from the verified
    token). /login (no session yet) and /api/keyed/* (API key in a header: no
    ambient credential a browser would attach) are exempt.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS or path in PUBLIC_GUARDED \
                or path.startswith("/api/keyed/") or path == "/api/keyed":
            await self.app(scope, receive, send)
            return
        if not csrf_ok(scope):
            STATS.rejected["csrf"] += 1
            await _json_error(403, "CSRF token missing or invalid (GET /csrf, send it as X-CSRF-Token)")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)


def csrf_ok(scope: Scope) -> bool:
    auth = scope.get("jwt")
    if not isinstance(auth, dict):
        return False
    sess = STORE.sessions.get(auth["claims"].get("sid", ""))
    sent = header(scope, b"x-csrf-token")
    if sess is None or not sess.get("csrf") or not sent:
        return False
    return hmac.compare_digest(sent.encode("latin-1"), sess["csrf"].encode("ascii"))


class ApiKeyMiddleware:
    """X-API-Key on /api/keyed/*: 401 when missing or unknown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope)
        if scope["type"] != "http" or not (path.startswith("/api/keyed/") or path == "/api/keyed"):
            await self.app(scope, receive, send)
            return
        key = header(scope, b"x-api-key")
        rec = STORE.key_record(key) if key else None
        if rec is None:
            STATS.rejected["api_key"] += 1
            await _json_error(401, "valid X-API-Key required", {"WWW-Authenticate": 'ApiKey realm="refapp"'})(
                scope, receive, send)
            return
        scope["api_key"] = rec
        await self.app(scope, receive, send)


# --------------------------------------------------------------------------
# handler-side re-verification (the self-checks)
# --------------------------------------------------------------------------


class InvariantViolation(Exception):
    def __init__(self, inv: str, detail: str) -> None:
        super().__init__(detail)
        self.inv = inv
        self.detail = detail


def authed_user(request: Request) -> str:
    """Re-verify what JWTAuthMiddleware should have enforced (I-MW-JWT)."""
    SELF_CHECKS.ran("I-MW-JWT")
    token = bearer(request.scope.get("headers", []))
    auth = request.scope.get("jwt")
    if token is None or not isinstance(auth, dict):
        raise InvariantViolation("I-MW-JWT", "a request without a verified bearer token reached a protected handler")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        alg = None
    if alg != JWT_ALGORITHM:
        raise InvariantViolation("I-MW-JWT", f"a token with alg {str(alg)[:20]!r} reached a protected handler")
    try:
        claims = verify_token(token)
    except TokenRejected as e:
        raise InvariantViolation("I-MW-JWT", f"a rejected token reached a protected handler: {e}") from None
    if token != auth["token"] or claims != auth["claims"]:
        raise InvariantViolation("I-MW-JWT", "the handler's token differs from the one the middleware verified")
    return str(claims["sub"])


def state_change_allowed(request: Request) -> None:
    """Re-verify the CSRF token before any state change (I-MW-CSRF)."""
    SELF_CHECKS.ran("I-MW-CSRF")
    if not csrf_ok(request.scope):
        raise InvariantViolation("I-MW-CSRF", "a state change reached its handler without a valid CSRF token")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _text(data: dict[str, Any], key: str, min_len: int, max_len: int) -> str:
    return check_text(key, data.get(key), min_len, max_len)


def guarded(fn):
    """Turn InvariantViolation into the 500 x-invariant answer."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except InvariantViolation as v:
            return invariant(v.inv, v.detail)

    wrapper.__name__ = fn.__name__
    return wrapper


# --------------------------------------------------------------------------
# guarded endpoints
# --------------------------------------------------------------------------


@guarded
async def login(request: Request) -> Response:
    data = await read_json_object(request)
    user = _text(data, "username", 1, MAX_CREDENTIAL)
    _text(data, "password", 1, MAX_CREDENTIAL)  # any non-empty pair (contract)
    sid = STORE.new_session(user)
    return JSONResponse({"user": user, "token": issue_token(user, sid), "token_type": "Bearer",
                         "expires_in": JWT_TTL_S})


@guarded
async def logout(request: Request) -> Response:
    authed_user(request)
    state_change_allowed(request)
    STORE.sessions.pop(request.scope["jwt"]["claims"]["sid"], None)
    return Response(status_code=204)


@guarded
async def me(request: Request) -> Response:
    user = authed_user(request)
    claims = request.scope["jwt"]["claims"]
    return JSONResponse({"user": user, "exp": claims["exp"]})


@guarded
async def csrf(request: Request) -> Response:
    authed_user(request)
    sess = STORE.session(request.scope["jwt"]["claims"]["sid"])
    if sess is None:  # logged out meanwhile
        raise HTTPException(401, "session ended")
    if not sess["csrf"]:
        sess["csrf"] = secrets.token_urlsafe(32)
    return JSONResponse({"csrf_token": sess["csrf"], "header": "X-CSRF-Token"},
                        headers={"Cache-Control": "no-store"})


@guarded
async def notes_collection(request: Request) -> Response:
    user = authed_user(request)
    if request.method == "POST":
        state_change_allowed(request)
        data = await read_json_object(request)
        note = STORE.create_note(user, _text(data, "title", 1, MAX_TITLE), _text(data, "body", 0, MAX_NOTE_BODY))
        return JSONResponse(note, status_code=201, headers={"Location": f"/api/notes/{note['id']}"})
    return JSONResponse(STORE.list_notes(user))


@guarded
async def note_item(request: Request) -> Response:
    user = authed_user(request)
    nid: int = request.path_params["id"]
    if request.method == "GET":
        return JSONResponse(STORE.get_note(user, nid))
    state_change_allowed(request)
    if request.method == "DELETE":
        STORE.delete_note(user, nid)
        return Response(status_code=204)
    note = STORE.get_note(user, nid)
    data = await read_json_object(request)
    note["title"] = _text(data, "title", 1, MAX_TITLE)
    note["body"] = _text(data, "body", 0, MAX_NOTE_BODY)
    return JSONResponse(note)


@guarded
async def create_key(request: Request) -> Response:
    user = authed_user(request)
    state_change_allowed(request)
    key = "ak_" + secrets.token_urlsafe(24)
    rec = STORE.add_key(user, key)
    return JSONResponse({"id": rec["id"], "key": key}, status_code=201)


def _key_owner(request: Request) -> dict[str, Any]:
    rec = request.scope.get("api_key")
    key = request.headers.get("x-api-key")
    if not isinstance(rec, dict) or not key or STORE.key_record(key) is not rec:
        # no listed invariant for API keys: refuse like the middleware would
        raise HTTPException(401, "valid X-API-Key required")
    return rec


async def keyed_whoami(request: Request) -> Response:
    rec = _key_owner(request)
    return JSONResponse({"user": rec["user"], "key_id": rec["id"]})


async def keyed_notes(request: Request) -> Response:
    rec = _key_owner(request)
    return JSONResponse(STORE.list_notes(rec["user"]))




async def debug_vars(request: Request) -> Response:
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = 0
    return JSONResponse({
        "sse_open": 0,
        "ws_open": 0,
        "tasks": tasks,
        "requests": STATS.requests,
        **probes.debug_fields(),  # wt-wsasgi: the orphan-stream probe route (refapp_common/probes.py)
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "threads": threading.active_count(),
        "sessions": len(STORE.sessions),
        "notes": len(STORE.notes),
        "api_keys": len(STORE.api_keys),
        "rejected": dict(STATS.rejected),
        "self_checks": SELF_CHECKS.snapshot(),
    })


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/debug/vars", debug_vars, methods=["GET"]),
    Route("/echo", EchoEndpoint()),
    Route("/echo/{rest:path}", EchoEndpoint()),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/me", me, methods=["GET"]),
    Route("/csrf", csrf, methods=["GET"]),
    Route("/api/notes", notes_collection, methods=["GET", "POST"]),
    Route("/api/notes/{id:int}", note_item, methods=["GET", "PUT", "DELETE"]),
    Route("/api/keys", create_key, methods=["POST"]),
    Route("/api/keyed/whoami", keyed_whoami, methods=["GET"]),
    Route("/api/keyed/notes", keyed_notes, methods=["GET"]),
]

inner = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
inner.router.redirect_slashes = False
# outermost first: API key -> JWT -> CSRF -> routes
guarded_app: ASGIApp = ApiKeyMiddleware(JWTAuthMiddleware(CSRFSynchronizerMiddleware(inner)))

OPEN_PATHS = frozenset({"/healthz", "/debug/vars", "/echo"})


app = RequestCounter(ExemptPathDispatcher(inner, guarded_app, OPEN_PATHS), STATS)

if __name__ == "__main__":
    sys.exit(main("auth_jwt_csrf", __file__))
