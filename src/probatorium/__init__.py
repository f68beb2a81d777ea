"""probatorium: benchmark and production-readiness validation for HTTP servers."""

__version__ = "0.1.0"
