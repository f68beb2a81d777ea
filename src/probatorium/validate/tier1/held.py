"""Streams the validator holds open on the target's SSE path, whoever opened them.

The server's `sse_open` counts every connection that asked for the SSE path: the SSE
slice's own streams, but also the adversarial route sweep's GET / HEAD on it (held until
the quiet timeout) and Markov walkers that wander onto it. I-CONN-2 compares `sse_open`
with the total held here, so one registry per cell is shared by every slice's raw
connection path (rawclient.exchange, the Markov H1Connection, the SSE slice).
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit

# A request-line anywhere in the bytes a connection sends: method SP request-target SP HTTP/.
_REQUEST_LINE = re.compile(rb"(?:^|\n)[!-~]+ ([^ \r\n]+) HTTP/")


class HeldStreams:
    """A counter of open connections that sent a request for the SSE path (one per connection)."""

    def __init__(self, sse_path: str = "/events") -> None:
        self.sse_path = sse_path
        self.count = 0  # open right now
        self.by_owner: Counter = Counter()  # open right now, per slice
        self.opened: Counter = Counter()  # ever opened, per slice

    def targets_sse(self, request: bytes) -> bool:
        """Whether any request-line in `request` asks for the SSE path (query ignored)."""
        for m in _REQUEST_LINE.finditer(request):
            target = m.group(1).decode("latin-1")
            if target.startswith(("http://", "https://")):
                target = urlsplit(target).path or "/"
            if target.split("?", 1)[0] == self.sse_path:
                return True
        return False

    def acquire(self, request: bytes, owner: str) -> bool:
        """Count the connection that sends `request` if it asks for the SSE path; True when
        counted (the caller then owes exactly one release(owner) when the connection closes)."""
        if not self.targets_sse(request):
            return False
        self.hold(owner)
        return True

    def hold(self, owner: str) -> None:
        """Count one stream `owner` opens on the SSE path."""
        self.count += 1
        self.by_owner[owner] += 1
        self.opened[owner] += 1

    def release(self, owner: str) -> None:
        """The connection of one counted stream closed."""
        self.count -= 1
        self.by_owner[owner] -= 1

    def describe(self) -> dict:
        """Streams opened on the SSE path per slice, for the tally."""
        return {"open": self.count, "opened": dict(self.opened)}
