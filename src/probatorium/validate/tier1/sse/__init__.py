"""The SSE kill-mid-stream slice and the server-side I-CONN-2 judge."""
