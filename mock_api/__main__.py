"""`python -m mock_api`: serve the marketplace mock (or the echo mock for `--spec`) under uvicorn.

Problems a user can cause (port in use, unreadable document) end with one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from typing import Final

import uvicorn

from mock_api.app import create_app
from mock_api.document import DocumentError
from mock_api.echo import create_echo_app

EXIT_USAGE: Final = 2


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mock_api",
        description="Serve the marketplace demo API, or echo requests for any OpenAPI 3.x document.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=3000, help="TCP port, 0 for any free one (default: %(default)s)"
    )
    parser.add_argument(
        "--spec", metavar="PATH", help="serve the echo mock for this OpenAPI document instead"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    return parser.parse_args(argv)


def _bind(host: str, port: int) -> socket.socket:
    """Open the listening socket ourselves, so a busy port is reported in one line.

    Raises:
        OSError: the address cannot be resolved or bound.
    """
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does; TIME_WAIT only
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    """Run the mock until interrupted; return the process exit code."""
    args = _parse_args(argv)
    try:
        app = create_echo_app(args.spec) if args.spec else create_app()
    except DocumentError as exc:
        print(f"mock_api: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for problem in getattr(app.state, "document_problems", []):
        print(f"mock_api: warning: {problem} (serving it anyway)", file=sys.stderr)
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        print(f"mock_api: cannot listen on {args.host}:{args.port}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    what = f"echo mock for {args.spec}" if args.spec else "marketplace API"
    print(
        f"mock_api: {what} on http://{shown}:{port} (request log: /__mock/requests)",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="off")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
