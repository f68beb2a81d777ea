"""The client side of the host agent: how a validator on the client host asks a server host for a target.

``PROBATORIUM_TARGET_AGENT=http://ADDR:PORT`` and ``PROBATORIUM_TARGET_AGENT_TOKEN``
(set by the ansible driver) make the launcher start refapp/app targets through
the agent of that server host (:mod:`probatorium.hosts.agent`) instead of
spawning them here. Requests are JSON over HTTP with a bearer token; every
call is bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from dataclasses import dataclass

from probatorium.errors import InfraError, UsageError

AGENT_ENV = "PROBATORIUM_TARGET_AGENT"
TOKEN_ENV = "PROBATORIUM_TARGET_AGENT_TOKEN"
HOST_NAME_ENV = "PROBATORIUM_HOST_NAME"


class AgentError(InfraError):
    """The host agent refused, failed, or could not be reached."""


@dataclass(frozen=True)
class AgentClient:
    """One server host's agent: its address and the token the controller gave it."""

    base: str
    token: str
    host_name: str = ""

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 90.0) -> dict:
        """One request; the decoded JSON answer, or AgentError with the agent's own reason."""
        parsed = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(parsed.hostname or "", parsed.port or 80, timeout=timeout)
        data = json.dumps(body or {}).encode()
        try:
            conn.request(method, path, body=data if method != "GET" else None,
                         headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read(4 << 20).decode("utf-8", errors="replace")
        except (OSError, http.client.HTTPException) as exc:
            raise AgentError(f"host agent {self.base}: {exc}") from None
        finally:
            conn.close()
        try:
            answer = json.loads(text) if text else {}
        except ValueError:
            answer = {"error": text[:200]}
        if response.status != 200:
            raise AgentError(f"host agent {self.base}: {answer.get('error') or f'HTTP {response.status}'}")
        return answer


def agent_from_env() -> AgentClient | None:
    """The agent the environment names, or None (targets start here, as usual)."""
    base = os.environ.get(AGENT_ENV, "").strip()
    if not base:
        return None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(f"{AGENT_ENV} is set without {TOKEN_ENV} (both are set by --driver ansible)")
    if not base.startswith("http://"):
        raise UsageError(f"{AGENT_ENV} must be http://ADDR:PORT, not {base!r}")
    return AgentClient(base.rstrip("/"), token, os.environ.get(HOST_NAME_ENV, "") or base)
