"""The load generator's WebSocket handshake and frames (a typo here made every ws-echo cell invalid)."""


def test_websocket_accept_matches_rfc6455_example():
    """RFC 6455 §1.3: key dGhlIHNhbXBsZSBub25jZQ== must be answered s3pPLMBiTxaQ9kYGzzhZRbK+xOo=."""
    from probatorium.wsframe import accept_value

    assert accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_loadgen_frames_with_the_one_framer():
    """A masked client text frame that the framer's header decoder reads back (RFC 6455 §5.2)."""
    from probatorium.loadgen.streams import ws_frame
    from probatorium.wsframe import decode_header, mask_bytes

    for n in (5, 300, 70000):
        raw = ws_frame(b"x" * n)
        fin, rsv, op, masked, length, hl = decode_header(raw)
        assert (fin, rsv, op, masked, length, len(raw)) == (True, 0, 1, True, n, hl + n)
        assert mask_bytes(raw[hl:], raw[hl - 4:hl]) == b"x" * n
