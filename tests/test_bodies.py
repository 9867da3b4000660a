"""converter.bodies: bounded decoding of gzip/deflate bodies (issue 12, item 1).

The end-to-end checks (a real hostile upstream, the server's RSS) are in
tests/integration/test_decompression.py; these pin the decoder's corners.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib

import pytest

from converter.bodies import MAX_MEMBERS, PIECE, BodyDecodingError, read_all

DATA = b'{"id": 1, "name": "widget"}\n' * 4000


def gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


CODED = [
    ("gzip", gzip(DATA)),
    ("x-gzip", gzip(DATA)),
    ("GZIP", gzip(DATA)),
    ("deflate", zlib.compress(DATA)),
    ("deflate", zlib.compress(DATA)[2:-4]),  # raw deflate, as some servers send it
    ("gzip, gzip", gzip(gzip(DATA))),
    ("deflate, gzip", gzip(zlib.compress(DATA))),
    ("identity", DATA),
    ("identity, gzip", gzip(DATA)),
    (None, DATA),
    ("gzip", gzip(DATA[:5000]) + gzip(DATA[5000:])),  # two members (RFC 1952 §2.2)
    ("gzip", gzip(DATA) + b"\x00\x00trailing garbage"),  # ignored, as gzip(1) does
]


@pytest.mark.parametrize("size", [1, 7, 16 * 1024 + 3, 1 << 20])
@pytest.mark.parametrize(("coding", "data"), CODED)
def test_bodies_are_decoded_whole_however_the_bytes_arrive(coding: str | None, data: bytes, size: int) -> None:
    assert read_all(chunks(data, size), coding, len(DATA)) == (DATA, False)


def test_the_limit_counts_decoded_bytes_and_the_rest_is_not_read() -> None:
    bomb = gzip(b"0," * (100 << 20))  # 200 MB in about 200 KB
    pieces = chunks(bomb, 64 * 1024)
    read = 0

    def wire() -> object:
        nonlocal read
        for piece in pieces:
            read += 1
            yield piece

    tracemalloc.start()
    try:
        body, truncated = read_all(wire(), "gzip", 1_000_000)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (len(body), truncated) == (1_000_000, True)
    assert read == 1 and peak < 4 * PIECE + 3_000_000


def test_a_middle_layer_padded_to_burn_cpu_is_cut() -> None:
    # A gzip member of empty stored blocks decodes to nothing; gzipped again, 10 MB of it is tiny. Without
    # the cut it decodes to b"" untruncated.
    padding = b"\x00\x00\x00\xff\xff" * (2 << 20)  # 10 MB: about 60 times the middle layer's limit
    inner = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + padding + b"\x01\x00\x00\xff\xff" + struct.pack("<II", 0, 0)
    started = time.monotonic()
    assert read_all(chunks(gzip(inner), 64 * 1024), "gzip, gzip", 100_000) == (b"", True)
    assert time.monotonic() - started < 2


ERRORS = [
    ("br", b"\x0b\x00", "the answer's Content-Encoding 'br' is not one this server decodes (it asks for gzip, deflate)"),
    ("zstd", b"", "the answer's Content-Encoding 'zstd' is not one this server decodes (it asks for gzip, deflate)"),
    ("compress", b"", "the answer's Content-Encoding 'compress' is not one this server decodes (it asks for gzip, "
                      "deflate)"),
    ("gzip, br", b"", "the answer's Content-Encoding 'br' is not one this server decodes (it asks for gzip, deflate)"),
    ("gzip,gzip,gzip,gzip", b"", "the answer's Content-Encoding 'gzip,gzip,gzip,gzip' stacks more than 3 encodings"),
    ("gzip", b"not gzip at all", "the answer's gzip body is corrupt (Error -3 while decompressing data: incorrect "
                                 "header check)"),
    ("gzip", gzip(DATA)[:100], "the answer's gzip body ended before its end (it was cut)"),
    ("deflate", zlib.compress(DATA)[:100], "the answer's deflate body ended before its end (it was cut)"),
    ("gzip", gzip(b"x") * (MAX_MEMBERS + 1), f"the answer's gzip body has more than {MAX_MEMBERS} members"),
]


@pytest.mark.parametrize(("coding", "data", "message"), ERRORS, ids=[e[2][:60] for e in ERRORS])
def test_what_cannot_be_decoded_is_one_clear_error(coding: str, data: bytes, message: str) -> None:
    with pytest.raises(BodyDecodingError) as exc:
        read_all(chunks(data, 1000) or [b""], coding, 10 << 20)
    assert str(exc.value) == message


def test_an_empty_body_with_a_content_encoding_is_empty() -> None:  # HEAD, 204, 304
    assert read_all([], "gzip", 100) == (b"", False)


# -- spec documents fetched over HTTP ---------------------------------------------------------------


def test_a_gzipped_spec_is_read_and_a_gzip_bomb_spec_is_refused_within_the_limit() -> None:
    from converter.spec import load_spec
    from converter.spec.load import MAX_DOCUMENT_BYTES
    from tests.integration.hostile import RawServer, send

    spec = b'{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}}'
    bomb = gzip(b"{" + b" " * (MAX_DOCUMENT_BYTES + (36 << 20)) + b"}")  # 100 MB of JSON in ~100 KB

    async def small(request: object, writer: object) -> bool:
        return await send(writer, 200, gzip(spec), headers={"content-encoding": "gzip"})  # type: ignore[arg-type]

    async def huge(request: object, writer: object) -> bool:
        return await send(writer, 200, bomb, headers={"content-encoding": "gzip"})  # type: ignore[arg-type]

    with RawServer({"/spec.json": small, "/bomb.json": huge}) as site:
        assert load_spec(f"{site.url}/spec.json").operations == ()
        assert site.requests[0].headers["accept-encoding"] == "gzip, deflate"
        tracemalloc.start()
        try:
            with pytest.raises(Exception) as exc:
                load_spec(f"{site.url}/bomb.json")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert str(exc.value) == f"{site.url}/bomb.json: the document is larger than {MAX_DOCUMENT_BYTES} bytes"
    assert peak < MAX_DOCUMENT_BYTES + (8 << 20), f"{peak / (1 << 20):.0f} MiB at the peak"
