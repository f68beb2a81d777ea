"""Reference app ``auth_session_ratelimit`` for probatorium.

A Starlette application that exercises real middleware packages:

* ``starlette.middleware.sessions.SessionMiddleware`` (itsdangerous-signed
  cookie ``session``),
* ``starlette.middleware.authentication.AuthenticationMiddleware`` (session
  cookie or ``Authorization: Bearer <token>``),
* ``slowapi.middleware.SlowAPIASGIMiddleware`` backed by ``limits`` in-memory
  storage (one shared counter per client key: the logged-in user, else the
  peer address), configurable with ``REFAPP_RATE_LIMIT``.

Route layout (see openapi.yaml for the contract):

* guarded (session/auth + rate limit): ``/login``, ``/logout``, ``/me``,
  ``/api/users...``;
* open (no session, no rate limit): ``/ws``, ``/events``, ``/healthz``,
  ``/debug/vars``, ``/echo`` and ``/echo/{rest:path}``.

Self-checks (500 with ``{"x-invariant": ...}``; counted in ``/debug/vars``
``self_checks``):

* ``I-MW-SESSION``: before authentication, the session the middleware put in
  the scope is compared with the cookie the client actually sent (decoded and
  verified again here) and with what the login wrote (the session id is a
  nonce and an HMAC of nonce and user under a key of the login's own). A
  session without a valid cookie, a session that differs from its cookie, or
  one carrying another user's name is a violation.
* ``I-MW-RATELIMIT``: an independent ledger replays the limiter's fixed
  windows from the moment each hit was taken (the key function runs in the
  same loop step as the storage's increment) and counts the admitted
  requests per client key and window; more than the limit is a violation.

Planted defects for testing the self-checks (``REFAPP_FAULT``):
``session_mixup`` (a session cache keyed by a cookie prefix hands one user's
session to another), ``ratelimit_overadmit`` (the limiter's key alternates
between two counters per client, so it admits twice the limit).

The split is made by a pure ASGI path dispatcher, so the session and rate-limit
middlewares never see the open paths at all.

Run on its own::

    python app.py [--port N] [--engine uvicorn|uvicorn-h11|hypercorn|granian|daphne]

prints ``ready addr=127.0.0.1:PORT`` once the port accepts connections.

State (users, posts) lives in process memory: run ONE worker per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import secrets
import sys
import threading
import time
import tracemalloc
from collections import Counter, OrderedDict
from typing import Any

from base64 import b64decode

from itsdangerous import BadData, BadSignature, TimestampSigner, URLSafeTimedSerializer
from limits import parse_many
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import SlowAPIASGIMiddleware
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
    requires,
)
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import ClientDisconnect, cookie_parser, HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # refapps/: refapp_common
from refapp_common.contract import (  # noqa: E402
    check_text,
    EchoEndpoint,
    ExemptPathDispatcher,
    healthz,
    http_error,
    read_json_object,
    RequestCounter,
    SelfChecks,
    Shutdown,
)
from refapp_common.runner import main  # noqa: E402
from refapp_common import probes  # noqa: E402

# --------------------------------------------------------------------------
# configuration (environment)
# --------------------------------------------------------------------------

#: Rate limit per client key, in ``limits`` notation; several limits may be
#: separated by ";" (e.g. "20/second;600/minute"). "off" disables limiting.
#: The default is generous so that validator traffic (one key per logged-in
#: walker) never trips it; set it tiny to exercise the 429 path.
RATE_LIMIT = os.environ.get("REFAPP_RATE_LIMIT", "1000/second").strip()
RATE_LIMIT_ENABLED = RATE_LIMIT.lower() not in ("", "0", "off", "none", "disabled")

#: Secret for the session cookie and bearer tokens. Random per process unless
#: given, so sessions do not survive a restart unless REFAPP_SECRET_KEY is set.
SECRET_KEY = os.environ.get("REFAPP_SECRET_KEY") or secrets.token_urlsafe(32)

#: Planted defects for testing the self-checks: "session_mixup", "ratelimit_overadmit".
FAULT = os.environ.get("REFAPP_FAULT", "").strip()

SESSION_COOKIE = "session"
SESSION_MAX_AGE = 14 * 24 * 3600
TOKEN_SALT = "refapp-auth-session-ratelimit-token"


#: Field limits (mirrored in openapi.yaml).
MAX_NAME = 200
MAX_EMAIL = 320
MAX_TITLE = 200
MAX_POST_BODY = 2000
MAX_CREDENTIAL = 256

#: Quotas keep memory bounded under long fuzzing runs (403 when exceeded).
MAX_USERS_PER_OWNER = 1000
MAX_POSTS_PER_USER = 200
MAX_USERS_TOTAL = 50_000
MAX_POSTS_TOTAL = 100_000
MAX_ACCOUNTS = 10_000

SSE_INTERVAL_S = 0.1

# --------------------------------------------------------------------------
# process-wide observable state (/debug/vars)
# --------------------------------------------------------------------------


class _Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.requests = 0
        self.sse_open = 0
        self.ws_open = 0


STATS = _Stats()
#: How many times each self-check compared (debug endpoint ``self_checks``); the rate-limit
#: check exists only while limiting is on.
SELF_CHECKS = SelfChecks("I-MW-SESSION", *(["I-MW-RATELIMIT"] if RATE_LIMIT_ENABLED else []))


#: Open WebSocket sessions: cancelled when the server stops.
WS_TASKS: set[asyncio.Task[Any]] = set()


def _cancel_ws_tasks() -> None:
    for task in list(WS_TASKS):
        task.cancel()


SHUTDOWN = Shutdown(on_begin=_cancel_ws_tasks)

# --------------------------------------------------------------------------
# in-memory data (single process, single event loop: no locking needed)
# --------------------------------------------------------------------------


class Store:
    def __init__(self) -> None:
        self.accounts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.users: dict[int, dict[str, Any]] = {}
        self.posts: dict[int, dict[int, dict[str, Any]]] = {}  # user id -> posts
        self.owner_index: dict[str, dict[int, None]] = {}
        self.user_owner: dict[int, str] = {}
        self.post_count = 0
        self._user_ids = itertools.count(1)
        self._post_ids = itertools.count(1)

    # accounts ------------------------------------------------------------
    def login(self, name: str) -> None:
        acct = self.accounts.pop(name, None)
        if acct is None:
            acct = {"created": time.time(), "logins": 0}
        acct["logins"] += 1
        self.accounts[name] = acct
        while len(self.accounts) > MAX_ACCOUNTS:
            self.accounts.popitem(last=False)

    # users ---------------------------------------------------------------
    def list_users(self, owner: str) -> list[dict[str, Any]]:
        return [self.users[uid] for uid in self.owner_index.get(owner, ())]

    def get_user(self, owner: str, uid: int) -> dict[str, Any]:
        if self.user_owner.get(uid) != owner:
            # someone else's resource is indistinguishable from a missing one
            raise HTTPException(404, "no such user")
        return self.users[uid]

    def create_user(self, owner: str, name: str, email: str) -> dict[str, Any]:
        owned = self.owner_index.setdefault(owner, {})
        if len(owned) >= MAX_USERS_PER_OWNER or len(self.users) >= MAX_USERS_TOTAL:
            if not owned:
                self.owner_index.pop(owner, None)
            raise HTTPException(403, "user quota exceeded")
        uid = next(self._user_ids)
        user = {"id": uid, "name": name, "email": email}
        self.users[uid] = user
        self.user_owner[uid] = owner
        self.posts[uid] = {}
        owned[uid] = None
        return user

    def update_user(self, owner: str, uid: int, name: str, email: str) -> dict[str, Any]:
        user = self.get_user(owner, uid)
        user["name"] = name
        user["email"] = email
        return user

    def delete_user(self, owner: str, uid: int) -> None:
        self.get_user(owner, uid)
        del self.users[uid]
        del self.user_owner[uid]
        self.post_count -= len(self.posts.pop(uid, {}))
        owned = self.owner_index.get(owner)
        if owned is not None:
            owned.pop(uid, None)
            if not owned:
                del self.owner_index[owner]

    # posts ---------------------------------------------------------------
    def list_posts(self, owner: str, uid: int) -> list[dict[str, Any]]:
        self.get_user(owner, uid)
        return list(self.posts[uid].values())

    def create_post(self, owner: str, uid: int, title: str, body: str) -> dict[str, Any]:
        self.get_user(owner, uid)
        posts = self.posts[uid]
        if len(posts) >= MAX_POSTS_PER_USER or self.post_count >= MAX_POSTS_TOTAL:
            raise HTTPException(403, "post quota exceeded")
        pid = next(self._post_ids)
        post = {"id": pid, "user_id": uid, "title": title, "body": body}
        posts[pid] = post
        self.post_count += 1
        return post

    def get_post(self, owner: str, uid: int, pid: int) -> dict[str, Any]:
        self.get_user(owner, uid)
        post = self.posts[uid].get(pid)
        if post is None:
            raise HTTPException(404, "no such post")
        return post


STORE = Store()

# --------------------------------------------------------------------------
# authentication: session cookie or bearer token
# --------------------------------------------------------------------------

TOKENS = URLSafeTimedSerializer(SECRET_KEY, salt=TOKEN_SALT)


def issue_token(name: str) -> str:
    return TOKENS.dumps({"u": name})


def _token_user(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    try:
        data = TOKENS.loads(credentials.strip(), max_age=SESSION_MAX_AGE)
    except BadData:  # bad signature, expired, malformed
        return None
    user = data.get("u") if isinstance(data, dict) else None
    return user if isinstance(user, str) and user else None


def current_user_name(conn: HTTPConnection) -> str | None:
    session = conn.scope.get("session")
    if isinstance(session, dict):
        user = session.get("user")
        if isinstance(user, str) and user:
            return user
    return _token_user(conn.headers.get("authorization"))


class SessionOrTokenBackend(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        name = current_user_name(conn)
        if name is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(name)


def client_key(request: Request) -> str:
    """One shared counter per logged-in user, else per peer address."""
    user = request.scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return "user:" + user.display_name
    client = request.client
    return "addr:" + (client.host if client and client.host else "unknown")


def rate_limit_key(request: Request) -> str:
    """The limiter's key function. slowapi calls it once per limit, in order, right before that
    limit's hit (same loop step, no await between): the ledger takes the hit's time here."""
    key = client_key(request)
    hits = request.scope.setdefault("refapp_rl_hits", [])
    LEDGER.hit(key, len(hits), time.time())
    hits.append(key)
    if FAULT == "ratelimit_overadmit":  # planted: two counters per client, twice the limit admitted
        STATS.overadmit_flip = not getattr(STATS, "overadmit_flip", False)
        return key + (":b" if STATS.overadmit_flip else ":a")
    return key


# --------------------------------------------------------------------------
# self-checks: I-MW-SESSION (session records) and I-MW-RATELIMIT (admission ledger)
# --------------------------------------------------------------------------


class SessionRecords:
    """What each session must hold, as the login wrote it, without storing anything per login:
    the session id is a nonce and an HMAC of (nonce, user) under a key only the login and this
    check use (derived from SECRET_KEY, so it survives a restart exactly when the cookies do).
    Memory stays flat however many logins a run makes."""

    def __init__(self, secret: str) -> None:
        self.key = hashlib.sha256(b"refapp-session-record\0" + secret.encode("utf-8")).digest()

    def _mac(self, nonce: str, user: str) -> str:
        return hmac.new(self.key, f"{nonce}\0{user}".encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def new_sid(self, user: str) -> str:
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._mac(nonce, user)}"

    def holds(self, sid: Any, user: Any) -> bool:
        """Whether session id `sid` was issued by the login of `user`."""
        if not isinstance(sid, str) or not isinstance(user, str):
            return False
        nonce, dot, mac = sid.partition(".")
        return bool(dot) and hmac.compare_digest(mac, self._mac(nonce, user))


SESSION_RECORDS = SessionRecords(SECRET_KEY)
#: Decodes the ``session`` cookie the way its format is defined (TimestampSigner over base64
#: JSON), independently of the middleware instance that serves the request.
SESSION_SIGNER = TimestampSigner(str(SECRET_KEY))


def cookie_session(scope: Scope) -> dict[str, Any] | None:
    """The session the client's ``session`` cookie carries (signature and age verified), None
    when there is no valid one. Cookie headers are read as the middleware reads them (every
    ``Cookie`` header, a later value of the same name wins)."""
    cookies: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        if key == b"cookie":
            cookies.update(cookie_parser(value.decode("latin-1")))
    data = cookies.get(SESSION_COOKIE)
    if data is None:
        return None
    try:
        payload = json.loads(b64decode(SESSION_SIGNER.unsign(data.encode("utf-8"), max_age=SESSION_MAX_AGE)))
    except (BadSignature, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def session_violation(scope: Scope) -> str | None:
    """I-MW-SESSION: the scope's session against the client's cookie and the login's record.
    Returns what is wrong, or None; counts one check when there is a session to compare."""
    held = scope.get("session")
    held = dict(held) if isinstance(held, dict) else {}
    sent = cookie_session(scope)
    if sent is None and not held:
        return None  # no session at all: nothing to compare
    SELF_CHECKS.ran("I-MW-SESSION")
    if sent is None:
        return f"a session for {str(held.get('user'))[:40]!r} reached the app without a valid session cookie"
    if held != sent:
        return (f"the session in the request ({str(held.get('user'))[:40]!r}) differs from the cookie the client "
                f"sent ({str(sent.get('user'))[:40]!r})")
    if "user" in sent and not SESSION_RECORDS.holds(sent.get("sid"), sent.get("user")):
        return (f"session {str(sent.get('sid'))[:8]}… carries the user {str(sent.get('user'))[:40]!r}, "
                f"whose login did not issue it")
    return None


class SessionAudit:
    """Runs the I-MW-SESSION check between the session middleware and authentication."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            wrong = session_violation(scope)
            if wrong is not None:
                response = JSONResponse({"x-invariant": "I-MW-SESSION", "error": wrong}, status_code=500)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SessionCacheBug:
    """Planted defect ``session_mixup``: a decoded-session cache keyed by the cookie's first 12
    characters (the signed base64 JSON of every session starts alike), so one user's session is
    handed to the next."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and FAULT == "session_mixup":
            sent = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"cookie"), "")
            key = sent.partition(SESSION_COOKIE + "=")[2][:12]
            session = scope.get("session")
            if key and isinstance(session, dict):
                if key in self.cache:
                    session.clear()
                    session.update(self.cache[key])
                elif session:
                    self.cache[key] = dict(session)
                    while len(self.cache) > 1000:
                        self.cache.popitem(last=False)
        await self.app(scope, receive, send)


#: How close to a window's edge a hit is ambiguous: the ledger's clock is read microseconds
#: before the limiter's own.
LEDGER_SLACK_S = 0.002


class AdmissionLedger:
    """I-MW-RATELIMIT: the limiter's fixed windows replayed independently, admissions counted.

    A ``limits`` fixed window starts at the first hit after the previous one expired and lasts
    the limit's period. ``hit`` (from the key function, for every request, admitted or not)
    replays the window boundaries; ``admitted`` (from the middleware right inside the limiter,
    only for requests it let through) counts. A hit within LEDGER_SLACK_S of an edge might
    belong to the window on the other side: such hits widen the allowance, nothing else does."""

    def __init__(self, text: str) -> None:
        self.limits = [(item.amount, float(item.get_expiry())) for item in parse_many(text)] if text else []
        # (key, limit index) -> [window start, window end, admitted, ambiguous admissions, previous end]
        self.windows: OrderedDict[tuple[str, int], list[float]] = OrderedDict()
        self.hit_at: dict[tuple[str, int], float] = {}

    def hit(self, key: str, index: int, now: float) -> None:
        if index >= len(self.limits):
            return
        slot = (key, index)
        w = self.windows.get(slot)
        if w is None or now >= w[1]:
            prev_end = w[1] if w is not None else float("-inf")
            self.windows[slot] = [now, now + self.limits[index][1], 0, 0, prev_end]
            self.windows.move_to_end(slot)
            while len(self.windows) > 20_000:
                old, _ = self.windows.popitem(last=False)
                self.hit_at.pop(old, None)
        self.hit_at[slot] = now

    def admitted(self, key: str, hits: int) -> str | None:
        """Count one admitted request of `key` whose first `hits` limits were hit; what is wrong, or None."""
        wrong = None
        for index in range(min(hits, len(self.limits))):
            w = self.windows.get((key, index))
            if w is None:
                continue
            now = self.hit_at.pop((key, index), w[0])
            w[2] += 1
            if now < w[4] + LEDGER_SLACK_S or now >= w[1] - LEDGER_SLACK_S:
                w[3] += 1
            amount, period = self.limits[index]
            if w[2] > amount + w[3] and wrong is None:
                wrong = (f"{int(w[2])} requests of {key[:60]!r} admitted within one {period:g} s window, "
                         f"limit {amount}")
        return wrong


LEDGER = AdmissionLedger(RATE_LIMIT if RATE_LIMIT_ENABLED else "")


class AdmissionAudit:
    """Right inside the limiter: every request reaching it was admitted (I-MW-RATELIMIT)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hits = scope.get("refapp_rl_hits")
        if scope["type"] == "http" and RATE_LIMIT_ENABLED and hits:
            SELF_CHECKS.ran("I-MW-RATELIMIT")
            wrong = LEDGER.admitted(hits[0], len(hits))
            if wrong is not None:
                response = JSONResponse({"x-invariant": "I-MW-RATELIMIT", "error": wrong}, status_code=500)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


LIMITER = Limiter(
    key_func=rate_limit_key,
    application_limits=[RATE_LIMIT] if RATE_LIMIT_ENABLED else [],
    storage_uri="memory://",
    strategy="fixed-window",
    headers_enabled=False,  # we add headers on 429 only (see rate_limited)
    enabled=RATE_LIMIT_ENABLED,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _string_field(data: dict[str, Any], key: str, max_len: int, *, min_len: int = 1) -> str:
    return check_text(key, data.get(key), min_len, max_len)


def _email_field(data: dict[str, Any]) -> str:
    email = _string_field(data, "email", MAX_EMAIL, min_len=3)
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain or any(c.isspace() for c in email):
        raise HTTPException(400, "'email' must look like local@domain")
    return email


def _location(request: Request, path: str) -> str:
    return request.scope.get("root_path", "") + path


# --------------------------------------------------------------------------
# guarded endpoints
# --------------------------------------------------------------------------


async def login(request: Request) -> Response:
    data = await read_json_object(request)
    username = data.get("username")
    password = data.get("password")
    for key, value in (("username", username), ("password", password)):
        check_text(key, value, 1, MAX_CREDENTIAL)
    assert isinstance(username, str)
    STORE.login(username)  # any non-empty pair is accepted (contract)
    request.session.clear()
    request.session["sid"] = SESSION_RECORDS.new_sid(username)
    request.session["user"] = username
    return JSONResponse({"user": username, "token": issue_token(username)})


@requires("authenticated", status_code=401)
async def logout(request: Request) -> Response:
    request.session.clear()
    return Response(status_code=204)


@requires("authenticated", status_code=401)
async def me(request: Request) -> Response:
    return JSONResponse({"user": request.user.display_name})


@requires("authenticated", status_code=401)
async def users_collection(request: Request) -> Response:
    owner = request.user.display_name
    if request.method == "POST":
        data = await read_json_object(request)
        name = _string_field(data, "name", MAX_NAME)
        email = _email_field(data)
        user = STORE.create_user(owner, name, email)
        return JSONResponse(
            user,
            status_code=201,
            headers={"Location": _location(request, f"/api/users/{user['id']}")},
        )
    return JSONResponse(STORE.list_users(owner))


@requires("authenticated", status_code=401)
async def user_item(request: Request) -> Response:
    owner = request.user.display_name
    uid: int = request.path_params["id"]
    if request.method == "PUT":
        STORE.get_user(owner, uid)  # 404 before validating the body
        data = await read_json_object(request)
        name = _string_field(data, "name", MAX_NAME)
        email = _email_field(data)
        return JSONResponse(STORE.update_user(owner, uid, name, email))
    if request.method == "DELETE":
        STORE.delete_user(owner, uid)
        return Response(status_code=204)
    return JSONResponse(STORE.get_user(owner, uid))


@requires("authenticated", status_code=401)
async def posts_collection(request: Request) -> Response:
    owner = request.user.display_name
    uid: int = request.path_params["id"]
    if request.method == "POST":
        STORE.get_user(owner, uid)
        data = await read_json_object(request)
        title = _string_field(data, "title", MAX_TITLE)
        body = _string_field(data, "body", MAX_POST_BODY, min_len=0)
        post = STORE.create_post(owner, uid, title, body)
        return JSONResponse(
            post,
            status_code=201,
            headers={"Location": _location(request, f"/api/users/{uid}/posts/{post['id']}")},
        )
    return JSONResponse(STORE.list_posts(owner, uid))


@requires("authenticated", status_code=401)
async def post_item(request: Request) -> Response:
    owner = request.user.display_name
    return JSONResponse(STORE.get_post(owner, request.path_params["id"], request.path_params["post_id"]))




def rate_limited(request: Request, exc: Exception) -> Response:
    """429 with Retry-After / X-RateLimit-* computed from the limits storage."""
    assert isinstance(exc, RateLimitExceeded)
    headers: dict[str, str] = {}
    current = getattr(request.state, "view_rate_limit", None)
    if current is not None:
        item, args = current
        reset_at, remaining = LIMITER.limiter.get_window_stats(item, *args)
        headers = {
            "Retry-After": str(max(1, int(reset_at - time.time() + 0.999))),
            "X-RateLimit-Limit": str(item.amount),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset_at)),
        }
    return JSONResponse({"error": f"rate limit exceeded: {exc.detail}"}, status_code=429, headers=headers)


guarded_app = Starlette(
    routes=[
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me, methods=["GET"]),
        Route("/api/users", users_collection, methods=["GET", "POST"]),
        Route("/api/users/{id:int}", user_item, methods=["GET", "PUT", "DELETE"]),
        Route("/api/users/{id:int}/posts", posts_collection, methods=["GET", "POST"]),
        Route("/api/users/{id:int}/posts/{post_id:int}", post_item, methods=["GET"]),
    ],
    middleware=[
        # outermost first: session -> auth -> rate limit -> routes
        Middleware(
            SessionMiddleware,
            secret_key=SECRET_KEY,
            session_cookie=SESSION_COOKIE,
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=False,
        ),
        Middleware(SessionCacheBug),  # a no-op unless REFAPP_FAULT=session_mixup
        Middleware(SessionAudit),  # I-MW-SESSION
        Middleware(AuthenticationMiddleware, backend=SessionOrTokenBackend()),
        Middleware(SlowAPIASGIMiddleware),
        Middleware(AdmissionAudit),  # I-MW-RATELIMIT
    ],
    exception_handlers={HTTPException: http_error, RateLimitExceeded: rate_limited},
)
guarded_app.state.limiter = LIMITER
# "/api/users/" is a 404, not a 307 to a URL rebuilt from the Host header.
guarded_app.router.redirect_slashes = False

# --------------------------------------------------------------------------
# open endpoints (outside session and rate limit)
# --------------------------------------------------------------------------


def _coro_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or type(coro).__name__


async def debug_vars(request: Request) -> Response:
    try:
        all_tasks = asyncio.all_tasks()
    except RuntimeError:
        all_tasks = set()
    tasks = len(all_tasks)
    by_coro = Counter(_coro_name(t) for t in all_tasks).most_common(5)
    body: dict[str, Any] = {
        "sse_open": STATS.sse_open,
        "ws_open": STATS.ws_open,
        "tasks": tasks,
        "requests": STATS.requests,
        **probes.debug_fields(),  # wt-wsasgi: the orphan-stream probe route (refapp_common/probes.py)
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - STATS.started, 3),
        "tasks_top": [[name, count] for name, count in by_coro],
        "threads": threading.active_count(),
        "accounts": len(STORE.accounts),
        "users": len(STORE.users),
        "posts": STORE.post_count,
        "rate_limit": RATE_LIMIT if RATE_LIMIT_ENABLED else "off",
        "self_checks": SELF_CHECKS.snapshot(),
        "stopping": SHUTDOWN.stopping,
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        body["tracemalloc_top"] = [
            {"where": str(stat.traceback[0]), "size": stat.size, "count": stat.count}
            for stat in snapshot.statistics("lineno")[:10]
        ]
    return JSONResponse(body)


class StreamState:
    """Per-stream flag set when the server reports ``http.disconnect``."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


async def _event_stream(state: StreamState, first_id: int):
    n = first_id
    # Stop on client disconnect (flag set by SSEResponse's receive watcher),
    # on server shutdown (SHUTDOWN.stopping), or by cancellation (Starlette
    # cancels the stream task once it sees http.disconnect).
    while not (state.gone or SHUTDOWN.stopping):
        payload = json.dumps({"n": n, "ts": round(time.time(), 3)})
        yield f"id: {n}\nevent: tick\ndata: {payload}\n\n"
        n += 1
        await asyncio.sleep(SSE_INTERVAL_S)


class SSEResponse(StreamingResponse):
    """A StreamingResponse whose open-stream slot is freed deterministically.

    The slot is held for exactly the duration of the ASGI call: it is released
    whether the stream ends by client disconnect, by cancellation, by send
    failure or by server shutdown, without relying on generator finalisation.

    Disconnects are observed through the single receive() loop Starlette
    already runs (``listen_for_disconnect``) instead of
    ``Request.is_disconnected()``: the latter cancels a pending receive(),
    and under granian 2.8 cancelling its receive future intermittently aborts
    the response (the stream is cut after the first event).
    """

    media_type = "text/event-stream"

    def __init__(self, state: StreamState, first_id: int, headers: dict[str, str]) -> None:
        super().__init__(_event_stream(state, first_id), headers=headers)
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state

        async def watched_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                state.gone = True
            return message

        STATS.sse_open += 1
        try:
            await super().__call__(scope, watched_receive, send)
        except (ClientDisconnect, OSError):
            state.gone = True
        finally:
            STATS.sse_open -= 1
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()


async def events(request: Request) -> Response:
    first = 1
    last = request.headers.get("last-event-id", "").strip()
    if last.isascii() and last.isdigit() and len(last) < 19:
        first = int(last) + 1
    return SSEResponse(StreamState(), first, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    task = asyncio.current_task()
    STATS.ws_open += 1
    if task is not None:
        WS_TASKS.add(task)
    try:
        if SHUTDOWN.stopping:
            await websocket.close(code=1001)
            return
        while True:
            message = await websocket.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                if message.get("text") is not None:
                    await websocket.send_text(message["text"])
                elif message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
            elif kind == "websocket.disconnect":
                return
    except asyncio.CancelledError:
        if not SHUTDOWN.stopping:
            raise
        # server shutdown: say goodbye with 1001 "going away"
        with contextlib.suppress(Exception):
            await websocket.close(code=1001)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        STATS.ws_open -= 1
        if task is not None:
            WS_TASKS.discard(task)


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette):
    SHUTDOWN.hook_signals()
    try:
        yield
    finally:
        SHUTDOWN.begin()


open_app = Starlette(
    routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/debug/vars", debug_vars, methods=["GET"]),
        Route("/events", events, methods=["GET"]),
        Route("/echo", EchoEndpoint()),  # any method
        Route("/echo/{rest:path}", EchoEndpoint()),  # any method
        WebSocketRoute("/ws", ws_echo),
    ],
    exception_handlers={HTTPException: http_error},
    lifespan=lifespan,
)

open_app.router.redirect_slashes = False

OPEN_PATHS = frozenset({"/healthz", "/debug/vars", "/events", "/ws", "/echo"})

# --------------------------------------------------------------------------
# top-level ASGI composition
# --------------------------------------------------------------------------


app = RequestCounter(ExemptPathDispatcher(open_app, guarded_app, OPEN_PATHS), STATS, SHUTDOWN)

if __name__ == "__main__":
    sys.exit(main("auth_session_ratelimit", __file__))
