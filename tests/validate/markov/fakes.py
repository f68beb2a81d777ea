"""A deterministic in-memory stand-in for a REST target (no sockets), for Markov walk tests."""

from __future__ import annotations

import json
import re

from probatorium.validate.tier1.http1 import parse_response_stream
from probatorium.validate.tier1.markov.client import HttpResult, build_request


def result(method: str, target: str, status: int, body: object = None, headers: dict | None = None,
           sent: bytes = b"") -> HttpResult:
    payload = b"" if body is None or status == 204 else json.dumps(body).encode()
    head = f"HTTP/1.1 {status} X\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if status != 204:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    raw = head.encode() + b"\r\n" + payload
    parsed = parse_response_stream(raw, [method], eof=False)
    resp = parsed.final_responses[0]
    return HttpResult(method, target, sent=sent, received=raw, status=status, response=resp,
                      violations=list(parsed.violations))


class FakeRest:
    """Users and posts, ids from one counter, namespaced per login like the refapp."""

    ITEM = re.compile(r"^/api/users/(\d+)$")
    POSTS = re.compile(r"^/api/users/(\d+)/posts$")
    POST = re.compile(r"^/api/users/(\d+)/posts/(\d+)$")

    def __init__(self, fail_invariant_every: int = 0) -> None:
        self.next_id = 1
        self.users: dict[int, dict] = {}
        self.posts: dict[int, dict[int, dict]] = {}
        self.log: list[tuple[str, str, bytes | None]] = []
        self.n = 0
        self.fail_invariant_every = fail_invariant_every

    def connection(self) -> "FakeConn":
        return FakeConn(self)

    def handle(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> HttpResult:
        self.log.append((method, target, body))
        self.n += 1
        h = dict(headers)
        path = target.split("?", 1)[0]
        if method == "POST" and path == "/login":
            return result(method, target, 200, {"user": "x", "token": "tok"}, {"Set-Cookie": "session=abc; path=/"})
        if h.get("Authorization") != "Bearer tok" or h.get("Cookie") != "session=abc":
            return result(method, target, 401, {"error": "login"})
        if self.fail_invariant_every and self.n % self.fail_invariant_every == 0:
            return result(method, target, 500, {"x-invariant": "I-MW-SESSION"})
        if path == "/logout":
            return result(method, target, 204)
        if path == "/me":
            return result(method, target, 200, {"user": "x"})
        if path == "/api/users":
            if method == "POST":
                uid = self.next_id
                self.next_id += 1
                self.users[uid] = {"id": uid, **json.loads(body or b"{}")}
                self.posts[uid] = {}
                return result(method, target, 201, self.users[uid], {"Location": f"/api/users/{uid}"})
            return result(method, target, 200, list(self.users.values()))
        if m := self.ITEM.match(path):
            uid = int(m.group(1))
            if uid not in self.users:
                return result(method, target, 404, {"error": "no"})
            if method == "DELETE":
                del self.users[uid]
                del self.posts[uid]
                return result(method, target, 204)
            if method == "PUT":
                self.users[uid].update(json.loads(body or b"{}"))
            return result(method, target, 200, self.users[uid])
        if m := self.POSTS.match(path):
            uid = int(m.group(1))
            if uid not in self.users:
                return result(method, target, 404, {"error": "no"})
            if method == "POST":
                pid = self.next_id
                self.next_id += 1
                self.posts[uid][pid] = {"id": pid, "user_id": uid, **json.loads(body or b"{}")}
                return result(method, target, 201, self.posts[uid][pid], {"Location": f"/api/users/{uid}/posts/{pid}"})
            return result(method, target, 200, list(self.posts[uid].values()))
        if m := self.POST.match(path):
            uid, pid = int(m.group(1)), int(m.group(2))
            post = self.posts.get(uid, {}).get(pid)
            return result(method, target, 200, post) if post else result(method, target, 404, {"error": "no"})
        return result(method, target, 404, {"error": "no route"})


class FakeConn:
    def __init__(self, rest: FakeRest) -> None:
        self.rest = rest

    async def request(self, method, target, headers=None, body=None) -> HttpResult:
        res = self.rest.handle(method, target, list(headers or []), body)
        res.sent = build_request(method, target, "fake:1", list(headers or []), body)
        return res

    async def close(self) -> None:
        pass
