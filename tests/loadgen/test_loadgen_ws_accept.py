"""The load generator's WebSocket handshake constant (a typo here made every ws-echo cell invalid)."""


def test_websocket_accept_matches_rfc6455_example():
    """RFC 6455 §1.3: key dGhlIHNhbXBsZSBub25jZQ== must be answered s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    import base64
    import hashlib

    from probatorium.loadgen.streams import WS_GUID

    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    assert base64.b64encode(hashlib.sha1(key + WS_GUID).digest()) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
