"""Bounded reading of HTTP bodies: Content-Encoding undone in small steps, never past a limit.

Every body this server reads from elsewhere (upstream APIs, MCP upstreams, specs, the
authorization server) goes through `BoundedBody`: the raw bytes from the wire are fed in as they
arrive, decoded at most `PIECE` bytes at a time, and kept only up to the limit, which counts
*decoded* bytes. A 300 MB JSON body gzipped to 300 KB therefore costs the limit, not 300 MB.

Only encodings that can be undone in bounded steps with the standard library are asked for
(`ACCEPT_ENCODING`) or accepted: gzip (and its alias x-gzip) and deflate (zlib-wrapped, or raw as
some servers send it), stacked up to `MAX_LAYERS` deep. Anything else an upstream answers with
(br, zstd, compress, ...) is refused with `BodyDecodingError` rather than passed on undecoded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Final

ACCEPT_ENCODING: Final = "gzip, deflate"
PIECE: Final = 64 * 1024  # most decoded bytes produced per step
MAX_LAYERS: Final = 3  # Content-Encoding: gzip, gzip, gzip is still read; a fourth layer is refused
MAX_MEMBERS: Final = 1024  # concatenated gzip members in one body (RFC 1952 §2.2)
_FEED: Final = 16 * 1024  # raw bytes handed to zlib at once: bounds the copy a new member makes
_ALIASES: Final = {"x-gzip": "gzip"}


class BodyDecodingError(ValueError):
    """The body's Content-Encoding is not one we decode, or the encoded bytes are broken."""


def content_codings(header: str | None) -> tuple[str, ...]:
    """The codings of a Content-Encoding value in the order they were applied (RFC 9110 §8.4).

    Raises:
        BodyDecodingError: a coding this module does not decode, or more than MAX_LAYERS of them.
    """
    codings = []
    for raw in (header or "").split(","):
        coding = _ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if coding in ("", "identity"):
            continue
        if coding not in ("gzip", "deflate"):
            raise BodyDecodingError(f"the answer's Content-Encoding {raw.strip()!r} is not one this server decodes "
                                    f"(it asks for {ACCEPT_ENCODING})")
        codings.append(coding)
    if len(codings) > MAX_LAYERS:
        raise BodyDecodingError(f"the answer's Content-Encoding {header!r} stacks more than {MAX_LAYERS} encodings")
    return tuple(codings)


class _Inflate:
    """One gzip or deflate layer, decoded at most PIECE bytes per step.

    `budget`: how many decoded bytes this layer may produce in all (None: no bound here).
    """

    def __init__(self, coding: str, budget: int | None) -> None:
        self.coding = coding
        self.budget = budget
        self.produced = 0
        self._obj: zlib._Decompress | None = None
        self._members = 0
        self._pending = b""  # gzip: the first byte of what follows a member, when it came alone
        self._in_stream = False  # a stream has started and not reached its end yet
        self._ended = False  # no more streams are read: deflate has one; gzip's trailing garbage is ignored

    def feed(self, data: bytes) -> Iterator[bytes]:
        for start in range(0, len(data), _FEED):
            for out in self._feed(data[start:start + _FEED]):
                self.produced += len(out)
                if self.budget is not None and self.produced > self.budget:
                    raise LayerFullError
                yield out

    def _feed(self, data: bytes) -> Iterator[bytes]:
        while data and not self._ended:
            if self._obj is None:
                if self._members:  # gzip: another member, or trailing garbage (ignored, as gzip(1) does)
                    data, self._pending = self._pending + data, b""
                    if len(data) < 2:
                        self._pending = data
                        return
                    if not data.startswith(b"\x1f\x8b"):
                        self._ended = True
                        return
                self._obj = self._start(data)
            try:
                out = self._obj.decompress(data, PIECE)
                if out:
                    yield out
                data = self._obj.unconsumed_tail
                while not data and len(out) == PIECE and not self._obj.eof:  # output pending inside zlib
                    out = self._obj.decompress(b"", PIECE)
                    if out:
                        yield out
            except zlib.error as exc:
                raise BodyDecodingError(f"the answer's {self.coding} body is corrupt ({exc})") from exc
            if self._obj.eof:
                data = self._obj.unused_data
                self._obj, self._in_stream = None, False
                self._ended = self.coding == "deflate"

    def _start(self, data: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            self._members += 1
            if self._members > MAX_MEMBERS:
                raise BodyDecodingError(f"the answer's gzip body has more than {MAX_MEMBERS} members")
            self._in_stream = True
            return zlib.decompressobj(wbits=31)
        self._in_stream = True
        # RFC 9110 §8.4.1.2 says zlib format (RFC 1950); some servers send raw deflate (RFC 1951).
        return zlib.decompressobj(wbits=15 if data[0] & 0x0F == 8 else -15)

    @property
    def ended_early(self) -> bool:
        """True when the last stream started did not reach its end: the body was cut."""
        return self._in_stream


class Decoder:
    """Undoes a Content-Encoding as the raw bytes arrive, in pieces of at most PIECE bytes.

    `middle_limit`: the most a middle layer of stacked codings may produce in all (None: no
    bound); past it, `feed` raises `LayerFullError`.
    """

    def __init__(self, content_encoding: str | None, middle_limit: int | None = None) -> None:
        """Raises: BodyDecodingError: see `content_codings`."""
        codings = list(reversed(content_codings(content_encoding)))  # the last one applied is the outermost
        self._layers = [_Inflate(c, None if i == len(codings) - 1 else middle_limit) for i, c in enumerate(codings)]

    def feed(self, raw: bytes) -> Iterator[bytes]:
        """The decoded pieces of `raw` (lazily: stop iterating and nothing more is decoded).

        Raises:
            BodyDecodingError: the encoded bytes are corrupt.
            LayerFullError: a middle layer went past `middle_limit`.
        """
        if not self._layers:
            if raw:
                yield raw
            return
        pieces: Iterable[bytes] = (raw,)
        for layer in self._layers:
            pieces = _through(layer, pieces)
        yield from pieces

    def check_complete(self) -> None:
        """Raises: BodyDecodingError: the body ended in the middle of an encoded stream (it was cut)."""
        for layer in self._layers:
            if layer.ended_early:
                raise BodyDecodingError(f"the answer's {layer.coding} body ended before its end (it was cut)")


class LayerFullError(Exception):
    """A middle layer of stacked codings produced more than its limit (a padded stream)."""


class BoundedBody:
    """Collects a body's decoded bytes up to `limit`; `truncated` says there was more.

    Feed raw (still encoded) bytes with `add` until it returns False (the limit is reached: read
    no more) or the body ends; then take the body from `finish`.
    """

    def __init__(self, content_encoding: str | None, limit: int) -> None:
        """Raises: BodyDecodingError: see `content_codings`."""
        self.limit = limit
        # A middle layer (stacked encodings) needs to produce about `limit` bytes for the next one,
        # with room for incompressible data; a layer padded far past that only burns CPU: cut there.
        self._decoder = Decoder(content_encoding, limit + limit // 8 + PIECE)
        self._parts: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, raw: bytes) -> bool:
        """Decode `raw` and keep what fits; False once the limit is reached (read no more).

        Raises:
            BodyDecodingError: the encoded bytes are corrupt.
        """
        if self.truncated:
            return False
        try:
            for piece in self._decoder.feed(raw):
                room = self.limit - self.size
                if len(piece) > room:
                    self._parts.append(piece[:room])
                    self.size, self.truncated = self.limit, True
                    return False
                self._parts.append(piece)
                self.size += len(piece)
        except LayerFullError:
            self.truncated = True
            return False
        return True

    def finish(self) -> bytes:
        """The decoded body (at most `limit` bytes).

        Raises:
            BodyDecodingError: the body ended in the middle of an encoded stream (it was cut).
        """
        if not self.truncated:
            self._decoder.check_complete()
        body = b"".join(self._parts)
        self._parts = [body]
        return body


def _through(layer: _Inflate, pieces: Iterable[bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield from layer.feed(piece)


def read_all(chunks: Iterable[bytes], content_encoding: str | None, limit: int) -> tuple[bytes, bool]:
    """Decode an iterable of raw chunks into (body, truncated), reading no further than needed.

    Raises:
        BodyDecodingError: see `BoundedBody`.
    """
    body = BoundedBody(content_encoding, limit)
    for chunk in chunks:
        if not body.add(chunk):
            break
    return body.finish(), body.truncated
