"""Decompression bombs (issue 12, item 1): `max_response_bytes` counts decoded bytes, for every
encoding, however the body is framed, and the server never holds more than the cap.

The hostile upstream (tests/integration/hostile.py) answers tests/specs/hostile-encodings.yaml: a
JSON object of `megabytes` MB of `0,` that gzip shrinks about 1000 to 1 (300 MB -> ~300 KB), sent
with the Content-Encoding asked for and framed by an honest Content-Length, chunks, a close, or a
Content-Length that lies. `openapi-mcp serve` runs as a real process in front of it (the aiohttp
path); the httpx path (an injected transport) is checked in-process with tracemalloc. The server's
peak RSS (VmHWM) must stay within 100 MB of what it was before the bombs.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx
import pytest

from converter.catalog import build_catalog
from converter.config import load_settings
from tests.integration.hostile import MB, RawServer, Request

if TYPE_CHECKING:
    from conftest import Process, Processes

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT: Final = Path(__file__).resolve().parents[2]
SPEC: Final = ROOT / "tests" / "specs" / "hostile-encodings.yaml"
CAP: Final = 1_000_000  # upstream.max_response_bytes (the default)
RSS_GROWTH_MB: Final = 100  # what the bombs together may add to the server's peak RSS


# -- the hostile upstream -------------------------------------------------------------------------


def _blocks(megabytes: int) -> Iterator[bytes]:
    """A JSON object of about `megabytes` MB: {"items": [0,0,...,0]}."""
    yield b'{"items": ['
    for _ in range(megabytes):
        yield b"0," * (MB // 2)
    yield b'0]}'


def plain(megabytes: int) -> bytes:
    return b"".join(_blocks(megabytes))


def _compress(blocks: Iterator[bytes] | list[bytes], wbits: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return b"".join(compressor.compress(block) for block in blocks) + compressor.flush()


@cache
def encoded(coding: str, megabytes: int) -> tuple[bytes, list[str]]:
    """The body for `megabytes` MB of JSON with `coding` applied, and its Content-Encoding lines."""
    def gzip(data: bytes) -> bytes:
        return _compress([data], 31)

    if coding == "identity":
        return plain(megabytes), []
    if coding in ("gzip", "x-gzip"):
        return _compress(_blocks(megabytes), 31), [coding]
    if coding == "deflate":
        return _compress(_blocks(megabytes), 15), ["deflate"]
    if coding == "raw-deflate":  # what some servers send as deflate (RFC 1951 without the zlib wrapper)
        return _compress(_blocks(megabytes), -15), ["deflate"]
    if coding == "gzip, gzip":
        return gzip(encoded("gzip", megabytes)[0]), ["gzip, gzip"]
    if coding == "gzip|gzip":  # the same, as two header lines
        return encoded("gzip, gzip", megabytes)[0], ["gzip", "gzip"]
    if coding == "deflate, gzip":  # deflate applied first, then gzip
        return gzip(encoded("deflate", megabytes)[0]), ["deflate, gzip"]
    if coding == "gzip, gzip, gzip, gzip":
        return gzip(encoded("gzip, gzip", megabytes)[0]), [coding]
    return b"\x28\xb5\x2f\xfd" + b"\x00" * 64, [coding]  # br, zstd: not decoded, so the bytes do not matter


class CompressingUpstream(RawServer):
    name = "compressing-upstream"

    async def answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        coding = request.query.get("encoding", "gzip")
        framing = request.query.get("framing", "length")
        body, encodings = encoded(coding, int(request.query.get("megabytes", "300")))
        head = ["HTTP/1.1 200 OK", "content-type: application/json", *(f"content-encoding: {e}" for e in encodings)]
        if framing == "length":
            head.append(f"content-length: {len(body)}")
        elif framing == "short":  # the rest comes a moment later, past the end the length promised
            head += ["content-length: 1000", "connection: close"]
        elif framing == "long":
            head.append(f"content-length: {len(body) * 10}")
        elif framing == "chunked":
            head.append("transfer-encoding: chunked")
        else:
            head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        if framing == "short":
            writer.write(body[:1000])
            await writer.drain()
            await asyncio.sleep(0.2)
            body = body[1000:]
        step = 16 * 1024
        for i in range(0, len(body), step):
            part = body[i:i + step]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part) if framing == "chunked" else part)
            await writer.drain()
        if framing == "chunked":
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        return framing in ("length", "chunked")


@pytest.fixture(scope="module")
def upstream() -> Iterator[CompressingUpstream]:
    with CompressingUpstream() as server:
        yield server


# -- the MCP server under test --------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    base_url: str
    process: Process

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def served(processes: Processes, free_port: Callable[[], int], openapi_mcp_command: str,
           tmp_path_factory: pytest.TempPathFactory, upstream: CompressingUpstream) -> Served:
    port = free_port()
    config = tmp_path_factory.mktemp("decompression") / "config.yaml"
    config.write_text(json.dumps({"spec": str(SPEC), "upstream": {"url": upstream.url, "timeout": 20}}))
    process = processes.start("openapi-mcp-decompression", [
        openapi_mcp_command, "serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)])
    base_url = f"http://127.0.0.1:{port}"
    process.wait_ready(f"{base_url}/healthz")
    return Served(base_url, process)


JSON_HEADERS: Final = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@asynccontextmanager
async def session(served: Served) -> AsyncIterator[Callable[[str, dict[str, Any]], Any]]:
    """An initialized MCP session over plain httpx; yields `call(tool, arguments) -> (result, answer bytes)`."""
    async with httpx.AsyncClient(base_url=served.base_url, timeout=60, trust_env=False) as http:
        init = await http.post("/mcp", headers=JSON_HEADERS, json={
            "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        assert init.status_code == 200, init.text
        headers = {**JSON_HEADERS, "mcp-session-id": init.headers["mcp-session-id"],
                   "mcp-protocol-version": "2025-06-18"}
        await http.post("/mcp", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})

        async def call(tool: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], int]:
            response = await http.post("/mcp", headers=headers, json={
                "jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
            assert response.status_code == 200, response.text[:500]
            return response.json()["result"], len(response.content)

        yield call


def text(result: dict[str, Any]) -> str:
    return "\n".join(block.get("text", "") for block in result["content"])


@pytest.fixture(scope="module")
def baseline(served: Served) -> float:
    """The server's peak RSS after one small compressed call (imports and pools warmed up)."""
    async def warm() -> None:
        async with session(served) as call:
            result, _ = await call("getJson", {"encoding": "gzip", "megabytes": 0})
            assert not result.get("isError"), text(result)
    asyncio.run(warm())
    return served.peak_rss_mb()


# -- the bomb the review sent, and its neighbours -------------------------------------------------


async def test_a_gzip_bomb_with_an_honest_length_costs_the_cap_not_its_size(
        served: Served, baseline: float, upstream: CompressingUpstream) -> None:
    async with session(served) as call:
        result, size = await call("getJson", {"encoding": "gzip", "framing": "length", "megabytes": 300})
    # a cut JSON body is no longer JSON: the documented tool says so (never a result breaking its schema)
    assert result["isError"] is True
    assert text(result).startswith("Upstream answered GET /json with a body larger than the configured limit of "
                                   "1,000,000 bytes (upstream.max_response_bytes); its start: {\"items\": [0,0,0")
    assert size < 5_000
    assert served.peak_rss_mb() - baseline < RSS_GROWTH_MB
    assert upstream.requests[-1].headers["accept-encoding"] == "gzip, deflate"  # only what we can bound


BOMBS: Final = [
    ("gzip", "length"), ("gzip", "chunked"), ("gzip", "close"), ("gzip", "long"), ("x-gzip", "length"),
    ("deflate", "length"), ("raw-deflate", "chunked"), ("gzip, gzip", "length"), ("gzip|gzip", "chunked"),
    ("deflate, gzip", "close"), ("identity", "chunked"),
]


@pytest.mark.parametrize(("encoding", "framing"), BOMBS, ids=[f"{e}-{f}" for e, f in BOMBS])
async def test_every_encoding_and_framing_is_cut_at_the_cap_in_decoded_bytes(
        served: Served, baseline: float, encoding: str, framing: str) -> None:
    megabytes = 50 if encoding == "identity" else 300  # 300 MB of plain text would take long on loopback
    async with session(served) as call:
        result, size = await call("getBlob", {"encoding": encoding, "framing": framing, "megabytes": megabytes})
    body = text(result)
    assert not result.get("isError"), body[:300]
    assert body.startswith('{"items": [0,0,0,')
    assert body.endswith("\n[response truncated: only the first 1,000,000 bytes are shown; the body is larger "
                         "than the configured limit]")
    assert len(body) < CAP + 200 and size < 2 * CAP
    assert served.peak_rss_mb() - baseline < RSS_GROWTH_MB


SMALL: Final = ["identity", "gzip", "x-gzip", "deflate", "raw-deflate", "gzip, gzip", "gzip|gzip", "deflate, gzip"]


@pytest.mark.parametrize("encoding", SMALL)
async def test_small_compressed_answers_are_decoded_whole(served: Served, encoding: str) -> None:
    async with session(served) as call:
        result, _ = await call("getJson", {"encoding": encoding, "framing": "chunked", "megabytes": 0})
    assert not result.get("isError"), text(result)
    assert result["structuredContent"] == {"items": [0]}


REFUSED: Final = [
    ("br", "length", "failed: the answer's Content-Encoding 'br' is not one this server decodes (it "
                     "asks for gzip, deflate)"),
    ("zstd", "chunked", "failed: the answer's Content-Encoding 'zstd' is not one this server decodes "
                        "(it asks for gzip, deflate)"),
    ("gzip, gzip, gzip, gzip", "length", "failed: the answer's Content-Encoding 'gzip, gzip, gzip, gzip' "
                                         "stacks more than 3 encodings"),
    # the Content-Length claims 1000 bytes: what arrives is a cut gzip stream, not a short body
    ("gzip", "short", "failed: the answer's gzip body ended before its end (it was cut)"),
]


@pytest.mark.parametrize(("encoding", "framing", "message"), REFUSED, ids=[f"{e}-{f}" for e, f, _ in REFUSED])
async def test_an_encoding_we_did_not_ask_for_or_a_cut_stream_is_a_clear_tool_error(
        served: Served, upstream: CompressingUpstream, encoding: str, framing: str, message: str) -> None:
    async with session(served) as call:
        result, _ = await call("getJson", {"encoding": encoding, "framing": framing, "megabytes": 1})
    assert result["isError"] is True
    assert text(result) == f"GET {upstream.url}/json {message}"


async def test_the_server_still_answers_after_the_bombs(served: Served, baseline: float) -> None:
    async with session(served) as call:
        result, _ = await call("getJson", {"encoding": "gzip", "megabytes": 0})
    assert result["structuredContent"] == {"items": [0]}
    assert served.peak_rss_mb() - baseline < RSS_GROWTH_MB


# -- the httpx path (an injected transport), in-process -------------------------------------------


@pytest.mark.parametrize(("encoding", "framing"), [("gzip", "length"), ("gzip, gzip", "chunked"),
                                                   ("deflate", "close")])
async def test_the_httpx_path_decodes_within_the_cap_too(upstream: CompressingUpstream, encoding: str,
                                                         framing: str) -> None:
    encoded(encoding, 300)  # built before measuring
    settings = load_settings(None, spec=str(SPEC), upstream_url=upstream.url)
    catalog = build_catalog(settings, transport=httpx.AsyncHTTPTransport())
    async with catalog:
        tracemalloc.start()
        try:
            result = await catalog.call_tool("getBlob", {"encoding": encoding, "framing": framing, "megabytes": 300})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    body = result.content[0].text  # type: ignore[union-attr]
    assert not result.is_error, body[:300]
    assert body.startswith('{"items": [0,0,0,') and "[response truncated: only the first 1,000,000 bytes" in body
    assert peak < 20 * MB, f"{peak / MB:.1f} MB allocated at the peak"
