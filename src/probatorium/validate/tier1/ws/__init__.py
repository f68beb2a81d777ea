"""WebSocket torture slice (RFC 6455): frames.py is pure, slice.py drives connections."""

from .frames import CASES, HANDSHAKE_CASES, grade, grade_handshake
from .slice import WsTortureSlice

__all__ = ["CASES", "HANDSHAKE_CASES", "WsTortureSlice", "grade", "grade_handshake"]
