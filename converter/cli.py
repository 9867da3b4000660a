"""`openapi-mcp` command line: serve, tools, check, demo.

Every error a user can cause ends in one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from converter.catalog import Catalog, build_catalog
from converter.catalog.dynamic import DynamicCatalog, build_served_catalog
from converter.config import Settings, load_settings
from converter.errors import ConverterError
from converter.models import Problem
from converter.serve import serve_http, serving, with_worker_session_key
from converter.version import __version__

log = logging.getLogger("openapi_mcp")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: noise, and a measurable cost per call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("httpx2", "mcp.client.streamable_http"):  # the MCP SDK's client (passthrough): per-request INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except ConverterError as exc:
        print(f"openapi-mcp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `openapi-mcp tools --json | head`
        sys.stderr.close()
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openapi-mcp", description="Serve OpenAPI operations as MCP tools.")
    parser.add_argument("--version", action="version", version=f"openapi-mcp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve MCP (streamable HTTP by default, or stdio)")
    _source_args(serve)
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 8000)")
    serve.add_argument("--path", help="MCP endpoint path (default /mcp)")
    serve.add_argument("--transport", choices=["http", "stdio"], help="http (default) or stdio")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="N processes on one listening socket, so N cores serve (default 1; http only)")
    serve.add_argument("--page-size", type=int, metavar="N",
                       help="tools/list pages of N tools, with MCP cursors (default: the whole list at once)")
    serve.add_argument("--strict", action="store_true", help="refuse to start if any operation cannot be converted")
    serve.add_argument("--watch", action="store_true",
                       help="reload when the config, a spec or a file it references changes, and poll URL specs "
                            "(config: reload: {watch: true}); SIGHUP always reloads")
    _mode_arg(serve)
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(func=_serve)

    tools = sub.add_parser("tools", help="print the tools that would be served")
    _source_args(tools)
    tools.add_argument("--json", action="store_true", help="print a JSON array of MCP Tool objects")
    _mode_arg(tools)
    tools.set_defaults(func=_tools)

    check = sub.add_parser("check", help="report what cannot be converted and why")
    _source_args(check)
    check.add_argument("--strict", action="store_true", help="also fail on warnings (not on routine name fixes)")
    check.add_argument("-v", "--verbose", action="store_true",
                       help="list every routine name fix too (operationIds made into valid tool names)")
    check.set_defaults(func=_check)

    demo = sub.add_parser("demo", help="run the marketplace mock and an MCP server for it")
    demo.add_argument("--port", type=int, default=8000, help="MCP server port (default 8000)")
    demo.add_argument("--mock-port", type=int, default=3000, help="marketplace mock port (default 3000)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.set_defaults(func=_demo)
    return parser


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC", help="OpenAPI/Swagger document: a path or an http(s) URL")
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    parser.add_argument("--upstream", metavar="URL", help="upstream base URL (overrides the spec's servers)")
    parser.add_argument("--read-only", action="store_true",
                        help="only GET, HEAD and OPTIONS operations become tools (config: read_only: true)")
    parser.add_argument("--no-cache", action="store_true",
                        help="convert the spec even if a compiled copy is cached (config: cache: false)")


def _mode_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["tools", "dynamic"],
                        help="tools: one tool per operation (default); dynamic: search/describe/call meta-tools "
                             "for huge APIs (config: mode)")


def _settings(args: argparse.Namespace) -> Settings:
    return _loader(args)()


def _loader(args: argparse.Namespace) -> functools.partial[Settings]:
    """What reads the settings from the config file and these flags: at start, and again at each reload."""
    return functools.partial(
        load_settings,
        args.config, spec=args.spec, upstream_url=getattr(args, "upstream", None), host=getattr(args, "host", None),
        port=getattr(args, "port", None), path=getattr(args, "path", None),
        transport=getattr(args, "transport", None), page_size=getattr(args, "page_size", None),
        workers=getattr(args, "workers", None),
        strict=getattr(args, "strict", False), read_only=getattr(args, "read_only", False),
        mode=getattr(args, "mode", None),
        no_cache=getattr(args, "no_cache", False), watch=getattr(args, "watch", False),
    )


_LOGGED_PROBLEMS = 10


def _report_problems(catalog: Catalog | DynamicCatalog) -> None:
    """Log what could not be converted; a long list is cut (`openapi-mcp check` shows all).
    Routine name fixes are one summary line."""
    problems = sorted((p for p in catalog.problems if not p.routine), key=lambda p: not p.fatal)
    for problem in problems[:_LOGGED_PROBLEMS]:
        log.warning("%s%s", "skipped: " if problem.fatal else "", problem)
    if len(problems) > _LOGGED_PROBLEMS:
        skipped = sum(p.fatal for p in problems)
        log.warning("... %d more (%d operations skipped in all); run `openapi-mcp check` to see every one",
                    len(problems) - _LOGGED_PROBLEMS, skipped)
    renamed = [p for p in catalog.problems if p.routine]
    if renamed:
        log.info("%s", _renamed_summary(renamed))
    for label in _empty_sources(catalog):
        log.warning("%s: the document has no operations (no paths): it adds no tools", label)
    inner = catalog.inner if isinstance(catalog, DynamicCatalog) else catalog
    for line in _credential_warnings(inner, configured_only=True):
        log.warning("%s", line)


def _renamed_summary(renamed: Sequence[Problem]) -> str:
    return (f"{len(renamed)} operationId(s) made into valid tool names (A-Z a-z 0-9 _ -, at most 64 characters; "
            f"the first: {renamed[0].message}); `openapi-mcp check --verbose` lists them")


def _empty_sources(catalog: Catalog | DynamicCatalog) -> list[str]:
    """The OpenAPI documents that define no operation at all (`openapi: 3.0.0` and nothing else)."""
    inner = catalog.inner if isinstance(catalog, DynamicCatalog) else catalog
    return [source.label for source in inner.sources if not source.plans and not source.problems]


_SHOWN_TOOLS = 5


def _credential_warnings(catalog: Catalog, *, configured_only: bool = False) -> list[str]:
    """One line per source and reason: the tools whose security requirement no credential meets.

    `configured_only`: only sources with upstream credentials (their calls fail; without any,
    calls are sent with the static headers only, as they always were).
    """
    lines = []
    for source in catalog.sources:
        if configured_only and source.credentials is None:
            continue
        for why, plans in source.unmet_credentials().items():
            names = ", ".join(plan.name for plan in plans[:_SHOWN_TOOLS])
            more = f" and {len(plans) - _SHOWN_TOOLS} more" if len(plans) > _SHOWN_TOOLS else ""
            effect = ("cannot be called (nothing is sent)" if source.credentials is not None
                      else "are sent without the credentials their spec asks for (none are configured)")
            lines.append(f"{source.upstream_key}: {len(plans)} tool(s) {effect}: {names}{more}; {why}")
    return lines


def _serve(args: argparse.Namespace) -> int:
    load: Callable[[], Settings] = with_worker_session_key(_loader(args))
    settings = load()
    catalog = build_served_catalog(settings)
    _report_problems(catalog)
    if isinstance(catalog, Catalog) and catalog.mcp_sources:
        import anyio  # list what the MCP upstreams serve now, so that a name collision stops the start

        anyio.run(catalog.preflight)
    provider = _tracing(settings)
    try:
        return _run(settings, catalog, load)
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans


def _tracing(settings: Settings) -> Any:
    if not settings.telemetry.traces:
        return None
    try:
        from converter.telemetry.tracing import setup_tracing

        return setup_tracing()
    except ImportError as exc:
        from converter.errors import ConfigError

        raise ConfigError("telemetry.traces: needs the OpenTelemetry SDK: pip install 'openapi-mcp[otel]'",
                          key="telemetry.traces") from exc


def _run(settings: Settings, catalog: Catalog | DynamicCatalog, load: Callable[[], Settings]) -> int:
    if settings.server.transport == "stdio":
        import anyio

        from converter.server.app import run_stdio

        serving()
        anyio.run(functools.partial(run_stdio, settings, catalog=catalog, reload_settings=load))
        return 0
    serve_http(settings, catalog, load)
    return 0


def _tools(args: argparse.Namespace) -> int:
    settings = _settings(args)
    catalog = build_served_catalog(settings, require_upstream=False)
    tools = [served.tool.model_dump(by_alias=True, exclude_none=True, mode="json") for served in catalog.served_tools]
    if args.json:  # exactly the served `tools` array, nothing else: scripts parse it
        json.dump(tools, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    operations = catalog.operations if isinstance(catalog, DynamicCatalog) else catalog.plans
    for plan in operations:
        summary = (plan.tool.description or "").splitlines()[0][:80]
        print(f"{plan.name:40} {plan.method:7} {plan.path}  {summary}")
    # The size of the `tools` array as sent; bytes/4 is the usual rough token estimate.
    size = len(json.dumps(tools, separators=(",", ":")))
    if isinstance(catalog, DynamicCatalog):
        print(f"\n{len(operations)} operations behind {len(tools)} meta-tools (dynamic mode: "
              f"{', '.join(served.name for served in catalog.served_tools)})")
        full = len(json.dumps([plan.tool.model_dump(by_alias=True, exclude_none=True, mode="json")
                               for plan in operations], separators=(",", ":")))
        print(f"tools/list is {size:,} bytes (about {size // 4:,} tokens); with --mode tools it would be "
              f"{full:,} bytes (about {full // 4:,} tokens)")
    else:
        print(f"\n{len(tools)} tools; tools/list is {size:,} bytes (about {size // 4:,} tokens)")
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    catalog = build_catalog(settings, require_upstream=False)
    skipped = [p for p in catalog.problems if p.fatal]
    warnings = [p for p in catalog.problems if not p.fatal and not p.routine]
    renamed = [p for p in catalog.problems if p.routine]
    for problem in skipped:
        print(f"skipped  {problem}")
    for problem in warnings:
        print(f"warning  {problem}")
    for line in _credential_warnings(catalog):
        print(f"warning  {line}")
        warnings.append(Problem("", line))
    for label in _empty_sources(catalog):
        print(f"warning  {label}: the document has no operations (no paths): it adds no tools")
        warnings.append(Problem("", "no operations"))
    if renamed and args.verbose:
        for problem in renamed:
            print(f"renamed  {problem}")
    elif renamed:
        print(f"renamed  {_renamed_summary(renamed)}")
    names = f", {len(renamed)} name(s) made valid" if renamed else ""
    print(f"{len(catalog.plans)} tools, {len(skipped)} operation(s) skipped, {len(warnings)} warning(s){names}")
    if skipped or (args.strict and warnings):
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from converter.demo import run_demo

    run_demo(host=args.host, port=args.port, mock_port=args.mock_port)
    return 0
