"""Frame encoding of the direct channel."""

from __future__ import annotations

import pytest

from replicas.channel.frames import (
    HEADER,
    KIND_HELLO,
    KIND_REQUEST,
    KIND_RESPONSE,
    FrameDecoder,
    FrameError,
    decode_request,
    decode_response,
    encode_hello,
    encode_request,
    encode_response,
)


def test_request_and_response_round_trip_across_split_reads():
    """Frames split at every byte boundary decode to the same values, in order."""
    data = (encode_hello(b"token") + encode_request(7, b"rid-1", b"/linear", b'{"x": 1}', 1500)
            + encode_response(7, 500, b'{"error": 1}'))
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i:i + 1])
    assert [(k, c) for k, c, _ in frames] == [(KIND_HELLO, 0), (KIND_REQUEST, 7), (KIND_RESPONSE, 7)]
    assert frames[0][2] == b"token"
    assert decode_request(frames[1][2]) == (1500, b"rid-1", b"/linear", b'{"x": 1}')
    assert decode_response(frames[2][2]) == (500, b'{"error": 1}')


def test_many_frames_in_one_read():
    data = b"".join(encode_response(i, 200, b"%d" % i) for i in range(100))
    frames = FrameDecoder().feed(data)
    assert [decode_response(p)[1] for _, _, p in frames] == [b"%d" % i for i in range(100)]


def test_garbage_length_is_rejected():
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(2**31, KIND_REQUEST, 1))
