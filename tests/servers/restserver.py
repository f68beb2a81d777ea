#!/usr/bin/env python3
"""A strictly correct REST server for Tier 2 tests, with optional PLANTED bugs.

Stdlib only, one file::

    python tests/servers/restserver.py --port 0 [--bug NAME ...] [--list-bugs] [--count-file PATH]

Once listening it prints ``ready addr=127.0.0.1:PORT`` (flushed); SIGTERM or
SIGINT stops it. Its contract is ``restserver.openapi.yaml`` (also served at
``GET /openapi.yaml``): login (any non-empty username/password pair, the user
created on first login, a bearer token back), owner-scoped items CRUD with
integer ids, and each item's notes (a child collection). Request bodies are
validated strictly (types, required, maxLength, enum, minimum/maximum,
additionalProperties: false → 400); ids that are not positive integers → 400;
another user's item or a note of another item → 404; unknown path → 404,
a known path with another method → 405 with Allow, a body that is not
``application/json`` → 415. Every answer is one the document declares.
Its HTTP/1.1 parsing is the standard library's (lenient: Tier 1's adversarial
cases find it so); the strictly correct HTTP/1.1 server is h1server.py. This
one is strictly correct at the API level, which is what Tier 2 judges.

Each ``--bug NAME`` plants exactly one realistic defect (``--list-bugs``).
``--count-file PATH``: on exit, one line ``requests=N first=T0 last=T1`` is
appended (N requests to the API's paths, whatever their method; /healthz,
/openapi.yaml and unknown paths such as an observer's /debug/vars are not
counted; T0/T1 the wall-clock times of the first and the last), so a benchmark
counts every client's traffic the same way, at the server.
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BUGS = {
    "use-after-delete": "DELETE /items/{id} answers 204 but the item stays readable",
    "authz-read": "GET /items/{id} does not check the owner: another user's item is readable",
    "long-field-5xx": "a name longer than 24 characters crashes the handler (500)",
    "leak-on-reject": "POST /items stores the item before validating it, then answers 400",
    "wrong-type": "GET /items/{id} answers qty as a string",
    "wrong-parent": "GET /items/{a}/notes/{n} finds the note even when it belongs to another item",
    "malformed-id-5xx": "a non-numeric id crashes the handler (500)",
    "lax-validation": "request bodies are not validated beyond their JSON syntax",
}

ITEM_IN = {"name": ("str", 1, 32), "kind": ("enum", ("book", "tool", "toy")), "qty": ("int", 0, 1000)}
NOTE_IN = {"text": ("str", 1, 64)}
CREDS = {"username": ("str", 1, 64), "password": ("str", 1, 64)}

ROUTES = [  # (regex, {method: handler name})
    (re.compile(r"/login"), {"POST": "login"}),
    (re.compile(r"/items"), {"GET": "list_items", "POST": "create_item"}),
    (re.compile(r"/items/([^/]+)"), {"GET": "get_item", "PUT": "update_item", "DELETE": "delete_item"}),
    (re.compile(r"/items/([^/]+)/notes"), {"GET": "list_notes", "POST": "create_note"}),
    (re.compile(r"/items/([^/]+)/notes/([^/]+)"), {"GET": "get_note", "DELETE": "delete_note"}),
]


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def validate(body, fields: dict, required: tuple) -> None:
    """Strict validation of a JSON object against a field table; HttpError(400) on any violation."""
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    for name in required:
        if name not in body:
            raise HttpError(400, f"{name} is required")
    for name, value in body.items():
        rule = fields.get(name)
        if rule is None:
            raise HttpError(400, f"unknown property {name}")
        if rule[0] == "str" and not (isinstance(value, str) and rule[1] <= len(value) <= rule[2]):
            raise HttpError(400, f"{name} must be a string of {rule[1]}..{rule[2]} characters")
        if rule[0] == "int" and not (isinstance(value, int) and not isinstance(value, bool)
                                     and rule[1] <= value <= rule[2]):
            raise HttpError(400, f"{name} must be an integer in {rule[1]}..{rule[2]}")
        if rule[0] == "enum" and value not in rule[1]:
            raise HttpError(400, f"{name} must be one of {', '.join(rule[1])}")


class Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.items: dict[int, dict] = {}
        self.notes: dict[int, dict] = {}
        self.deleted: set[int] = set()
        self.next_id = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


class Api:
    """The application: handlers take (user, params, body) and return (status, payload, headers)."""

    def __init__(self, bugs: set[str]) -> None:
        self.bugs, self.s = bugs, Store()

    def _id(self, text: str) -> int:
        if "malformed-id-5xx" in self.bugs:
            value = int(text)  # the bug: a ValueError escapes as a 500
        elif not text.isdigit() or len(text) > 12:
            raise HttpError(400, "ids are positive integers")
        else:
            value = int(text)
        if value < 1:
            raise HttpError(400, "ids are positive integers")
        return value

    def _check(self, body, fields, required) -> None:
        if "long-field-5xx" in self.bugs and isinstance(body, dict) and isinstance(body.get("name"), str) \
                and len(body["name"]) > 24:
            raise RuntimeError("name buffer overflow")  # the bug
        if "lax-validation" in self.bugs:
            if not isinstance(body, dict):
                raise HttpError(400, "the body must be a JSON object")
            return
        validate(body, fields, required)

    def _item(self, user: str, text: str, *, reading: bool = False) -> dict:
        item_id = self._id(text)
        item = self.s.items.get(item_id)
        if item is None or (item_id in self.s.deleted and not (reading and "use-after-delete" in self.bugs)):
            raise HttpError(404, "no such item")
        if item["owner"] != user and not (reading and "authz-read" in self.bugs):
            raise HttpError(404, "no such item")
        return item

    def _out(self, item: dict) -> dict:
        out = dict(item)
        if "wrong-type" in self.bugs:
            out["qty"] = str(out["qty"])
        return out

    def login(self, user, params, body):
        validate(body, CREDS, ("username", "password"))
        with self.s.lock:
            known = self.s.users.setdefault(body["username"], body["password"])
            if known != body["password"]:
                raise HttpError(401, "wrong password")
            token = secrets.token_hex(16)
            self.s.tokens[token] = body["username"]
        return 200, {"token": token}, {}

    def list_items(self, user, params, body):
        with self.s.lock:
            mine = [self._out(i) for k, i in sorted(self.s.items.items())
                    if i["owner"] == user and k not in self.s.deleted]
        return 200, mine, {}

    def create_item(self, user, params, body):
        with self.s.lock:
            if "leak-on-reject" in self.bugs and isinstance(body, dict) and isinstance(body.get("name"), str):
                item = {"id": self.s.new_id(), "name": body["name"][:32], "kind": "book", "qty": 0, "owner": user}
                self.s.items[item["id"]] = item  # the bug: stored before validation
                self._check(body, ITEM_IN, ("name", "kind"))
                item.update(kind=body["kind"], qty=body.get("qty", 0))
                return 201, self._out(item), {"Location": f"/items/{item['id']}"}
            self._check(body, ITEM_IN, ("name", "kind"))
            item = {"id": self.s.new_id(), "name": body.get("name"), "kind": body.get("kind"),
                    "qty": body.get("qty", 0), "owner": user}
            self.s.items[item["id"]] = item
        return 201, self._out(item), {"Location": f"/items/{item['id']}"}

    def get_item(self, user, params, body):
        with self.s.lock:
            return 200, self._out(self._item(user, params[0], reading=True)), {}

    def update_item(self, user, params, body):
        with self.s.lock:
            item = self._item(user, params[0])
            self._check(body, ITEM_IN, ("name", "kind"))
            item.update(name=body.get("name"), kind=body.get("kind"), qty=body.get("qty", 0))
            return 200, self._out(item), {}

    def delete_item(self, user, params, body):
        with self.s.lock:
            item = self._item(user, params[0])
            self.s.deleted.add(item["id"])
            for nid in [n for n, note in self.s.notes.items() if note["item_id"] == item["id"]]:
                del self.s.notes[nid]
            if "use-after-delete" not in self.bugs:
                del self.s.items[item["id"]]
        return 204, None, {}

    def list_notes(self, user, params, body):
        with self.s.lock:
            item = self._item(user, params[0])
            return 200, [n for _, n in sorted(self.s.notes.items()) if n["item_id"] == item["id"]], {}

    def create_note(self, user, params, body):
        with self.s.lock:
            item = self._item(user, params[0])
            self._check(body, NOTE_IN, ("text",))
            note = {"id": self.s.new_id(), "item_id": item["id"], "text": body.get("text")}
            self.s.notes[note["id"]] = note
        return 201, note, {"Location": f"/items/{item['id']}/notes/{note['id']}"}

    def _note(self, user, params) -> dict:
        item = self._item(user, params[0])
        note = self.s.notes.get(self._id(params[1]))
        if note is None or (note["item_id"] != item["id"] and "wrong-parent" not in self.bugs):
            raise HttpError(404, "no such note")
        if self.s.items.get(note["item_id"], {}).get("owner") != user:
            raise HttpError(404, "no such note")
        return note

    def get_note(self, user, params, body):
        with self.s.lock:
            return 200, self._note(user, params), {}

    def delete_note(self, user, params, body):
        with self.s.lock:
            note = self._note(user, params)
            if note["item_id"] != self._id(params[0]):
                raise HttpError(404, "no such note")
            del self.s.notes[note["id"]]
        return 204, None, {}


class Counter:
    """Requests to the API's paths, and the wall-clock times of the first and the last (for --count-file)."""

    def __init__(self) -> None:
        self.lock, self.n, self.first, self.last = threading.Lock(), 0, 0.0, 0.0

    def add(self) -> None:
        now = time.time()
        with self.lock:
            self.n += 1
            self.first = self.first or now
            self.last = now

    def line(self) -> str:
        return f"requests={self.n} first={self.first:.6f} last={self.last:.6f}\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: Api
    counter = Counter()
    spec_path = Path(__file__).with_name("restserver.openapi.yaml")

    def log_message(self, fmt, *args):  # quiet
        pass

    def _send(self, status: int, payload, headers: dict | None = None, ctype: str = "application/json") -> None:
        data = b"" if payload is None else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", ctype)
        if status != 204:  # RFC 9110 §8.6: no Content-Length on a 204
            self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _dispatch(self) -> None:
        length = self.headers.get("Content-Length")
        raw = self.rfile.read(int(length)) if length and length.isdigit() else b""
        path = self.path.split("?", 1)[0]
        if path == "/healthz" and self.command == "GET":
            return self._send(200, b"ok", ctype="text/plain")
        if path == "/openapi.yaml" and self.command == "GET":
            return self._send(200, self.spec_path.read_bytes(), ctype="application/yaml")
        try:
            status, payload, headers = self._route(path, raw)
        except HttpError as e:
            status, payload, headers = e.status, {"error": e.message}, e.headers
        except Exception as e:  # noqa: BLE001 - a planted crash answers 500, as frameworks do
            status, payload, headers = 500, {"error": f"internal error: {type(e).__name__}"}, {}
        self._send(status, payload, headers)

    def _route(self, path: str, raw: bytes):
        for rx, methods in ROUTES:
            m = rx.fullmatch(path)
            if m is None:
                continue
            self.counter.add()
            name = methods.get(self.command)
            if name is None:
                known = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
                if self.command not in known:
                    raise HttpError(501, f"{self.command} is not implemented")
                raise HttpError(405, "method not allowed", {"Allow": ", ".join(methods)})
            body = None
            if self.command in ("POST", "PUT"):
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype != "application/json":
                    raise HttpError(415, "request bodies are application/json")
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise HttpError(400, "the body is not JSON") from None
            user = None
            if name != "login":
                auth = self.headers.get("Authorization") or ""
                user = self.api.s.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
                if user is None:
                    raise HttpError(401, "log in first")
            return getattr(self.api, name)(user, m.groups(), body)
        raise HttpError(404, "no such path")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def handle_one_request(self):  # unknown methods reach _dispatch too (501)
        try:
            return super().handle_one_request()
        except ConnectionError:
            self.close_connection = True

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Strictly correct REST test server with optional planted bugs.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--bug", action="append", default=[], metavar="NAME", help="plant a bug (repeatable, or comma-separated)")
    p.add_argument("--list-bugs", action="store_true", help="print the bug names and exit")
    p.add_argument("--count-file", metavar="PATH", help="on exit, append 'requests=N first=T0 last=T1' here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_bugs:
        for name, what in BUGS.items():
            print(f"{name}: {what}")
        return 0
    bugs = {b.strip() for arg in args.bug for b in arg.split(",") if b.strip()}
    unknown = bugs - set(BUGS)
    if unknown:
        print(f"unknown bug(s): {', '.join(sorted(unknown))}; known: {', '.join(BUGS)}", file=sys.stderr)
        return 2
    Handler.api = Api(bugs)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    host, port = server.server_address[:2]
    print(f"ready addr={host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    if args.count_file:
        with open(args.count_file, "a", encoding="utf-8") as f:
            f.write(Handler.counter.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
