"""Live reload: read the config and specs again and serve the result without a restart.

`Reloader.reload` loads the settings again (the same file and command-line flags as at start),
builds the next catalog beside the running one (in a worker thread: calls keep being served),
and only when it is complete swaps it in (converter.catalog.live). Parts whose settings did not
change are kept: upstream connection pools, upstream token caches, MCP server sessions, the
decision service cache, rate-limit counters (converter.catalog.reuse); the token verifier and its
cache belong to the server and are never rebuilt.

A config or spec that fails to load leaves the running catalog serving: one error line names
what is wrong, `/readyz` shows it under `reload`, and `openapi_mcp_reload_total{result="error"}`
counts it. Settings that only take effect at start (`RESTART_ONLY`: the listener, telemetry,
Redis, token verification, the MCP servers fronted) keep their running values; a change of
them is logged and shown in `/readyz` as needing a restart, and everything else is applied.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel

from converter.catalog.dynamic import build_served_catalog
from converter.catalog.live import LiveCatalog, Served
from converter.config import Settings
from converter.errors import ConverterError

log = logging.getLogger("openapi_mcp")

# Built once at start, so a change needs a restart.
RESTART_ONLY: Final = ("server", "telemetry", "redis")
# Of `auth:`, what the catalog's policy reads (applied live); the rest verifies tokens.
LIVE_AUTH_KEYS: Final = frozenset({"tool_scopes", "required_scopes", "scope_implies", "claim_to_header",
                                   "scopes_supported"})

Result = Literal["ok", "error"]


@dataclass
class ReloadState:
    """The last reload, for `/readyz`."""

    result: Result | None = None
    trigger: str | None = None
    at: float | None = None  # unix time
    error: str | None = None
    tools: int | None = None
    restart_needed: list[str] = field(default_factory=list)
    reloads: int = 0

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"result": self.result, "reloads": self.reloads}
        if self.trigger is not None:
            body["trigger"] = self.trigger
        if self.at is not None:
            body["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at))
        if self.error is not None:
            body["error"] = self.error
        if self.restart_needed:
            body["restart_needed"] = self.restart_needed
        return body


def live_settings(running: Settings, wanted: Settings) -> tuple[Settings, list[str]]:
    """What a reload can apply of `wanted` while `running` is served, and the keys that need a restart.

    The restart-only blocks keep their running values; of `auth:` only the keys the policy reads
    change; the MCP servers fronted stay as they are unless the new list is the same.
    """
    update: dict[str, Any] = {}
    restart: list[str] = []
    for key in RESTART_ONLY:
        old, new = getattr(running, key), getattr(wanted, key)
        if old != new:
            restart += _changed_keys(key, old, new)
            update[key] = old
    if running.auth is None or wanted.auth is None:
        if (running.auth is None) != (wanted.auth is None):
            restart.append("auth")
            update["auth"] = running.auth
    else:
        verifying = {k: v for k, v in wanted.auth if k not in LIVE_AUTH_KEYS}
        changed = [k for k, v in verifying.items() if getattr(running.auth, k) != v]
        if changed:
            restart += [f"auth.{k}" for k in changed]
            update["auth"] = running.auth.model_copy(update={k: getattr(wanted.auth, k) for k in LIVE_AUTH_KEYS})
    if _mcp_servers(running) != _mcp_servers(wanted):
        # converter.passthrough's handlers are registered at start for the servers fronted then.
        restart.append("mcp_upstream" if running.mcp_upstream != wanted.mcp_upstream else "sources[].mcp_upstream")
        update["mcp_upstream"] = running.mcp_upstream
        update["sources"] = ([e for e in wanted.sources if e.mcp_upstream is None]
                             + [e for e in running.sources if e.mcp_upstream is not None])
    return (wanted.model_copy(update=update) if update else wanted), restart


def _mcp_servers(settings: Settings) -> list[Any]:
    servers: list[Any] = [("", settings.mcp_upstream)] if settings.mcp_upstream is not None else []
    return servers + [(e.prefix, e.mcp_upstream) for e in settings.sources if e.mcp_upstream is not None]


def _changed_keys(key: str, old: Any, new: Any) -> list[str]:
    if not isinstance(old, BaseModel) or not isinstance(new, BaseModel):
        return [key]
    return [f"{key}.{name}" for name in type(old).model_fields if getattr(old, name) != getattr(new, name)] or [key]


class Reloader:
    """Reloads `live` from `load()`; one reload at a time (a trigger during one waits for it)."""

    def __init__(self, live: LiveCatalog, settings: Settings, load: Callable[[], Settings], *,
                 transport: Any = None, on_result: Callable[[Result], None] | None = None) -> None:
        """Args:
            live: what the server serves.
            settings: the running settings (as loaded at start).
            load: reads the settings again (the same file and command-line flags).
            transport: an httpx transport for the upstreams (tests).
            on_result: told "ok" or "error" after each reload (the metric).
        """
        self.live = live
        self.settings = settings
        self._load = load
        self._transport = transport
        self._on_result = on_result
        self._lock = anyio.Lock()
        self.state = ReloadState()

    def __repr__(self) -> str:
        return f"Reloader(reloads={self.state.reloads}, last={self.state.result!r})"

    async def reload(self, trigger: str = "SIGHUP") -> bool:
        """Load the settings and specs again and serve them; False (the old catalog still
        serving, the error logged and kept in `state`) when they cannot be loaded."""
        async with self._lock:
            old = self.live.current
            try:
                wanted = await anyio.to_thread.run_sync(self._load)
                effective, restart = live_settings(self.settings, wanted)
                built = await anyio.to_thread.run_sync(self._build, effective, old)
                try:
                    await self.live.swap(built)
                except BaseException:
                    built.detach()  # it never served: the MCP sources it shares must not report to it
                    raise
            except ConverterError as exc:
                return self._failed(trigger, str(exc), len(old.tool_names))
            except Exception as exc:  # a bug of ours: the old catalog keeps serving all the same
                log.exception("reload (%s) failed unexpectedly", trigger)
                return self._failed(trigger, f"internal error ({type(exc).__name__}); the server log has details",
                                    len(old.tool_names))
            previous, self.settings = self.settings, effective
            self._succeeded(trigger, old, built, restart)
            if gc.get_freeze_count():
                # converter.serve froze what startup built, the first catalog with it: frozen
                # objects are never collected, so the replaced catalog would stay in memory.
                gc.unfreeze()
            kinds = _changed_kinds(previous, effective, old, built)
            if kinds:
                await self.live.announce(kinds)
            return True

    def _build(self, settings: Settings, old: Served) -> Served:
        return build_served_catalog(settings, transport=self._transport, parts=old.parts)

    def _failed(self, trigger: str, error: str, tools: int) -> bool:
        log.error("reload (%s) failed, still serving the previous %d tools: %s", trigger, tools, error)
        self._record("error", trigger, error=error)
        return False

    def _succeeded(self, trigger: str, old: Served, new: Served, restart: list[str]) -> None:
        before, after = old.list_result.tools, new.list_result.tools
        old_tools = {tool.name: tool for tool in before}
        new_tools = {tool.name: tool for tool in after}
        added = len(new_tools.keys() - old_tools.keys())
        removed = len(old_tools.keys() - new_tools.keys())
        changed = sum(1 for name, tool in new_tools.items() if name in old_tools and old_tools[name] != tool)
        kept = new.parts.kept
        fatal = sum(p.fatal for p in new.problems)
        log.info("reload (%s): serving %d tools (%d added, %d removed, %d changed)%s%s", trigger, len(after),
                 added, removed, changed, f"; kept {len(kept)} connection(s) and cache(s)" if kept else "",
                 f"; {fatal} operation(s) skipped (openapi-mcp check lists them)" if fatal else "")
        if restart:
            log.warning("reload (%s): %s changed; that takes effect only after a restart (the running "
                        "values are kept)", trigger, ", ".join(restart))
        self._record("ok", trigger, restart=restart)

    def _record(self, result: Result, trigger: str, *, error: str | None = None,
                restart: list[str] | None = None) -> None:
        state = self.state
        state.result, state.trigger, state.at, state.error = result, trigger, time.time(), error
        if restart is not None:  # a failed reload changes nothing: what needed a restart still does
            state.restart_needed = restart
        state.reloads += 1
        if self._on_result is not None:
            self._on_result(result)


def _changed_kinds(old_settings: Settings, new_settings: Settings, old: Served, new: Served) -> frozenset[str]:
    """The lists clients should fetch again: the tools when they changed, every list when the
    access rules or scopes did (what each caller may see may have changed)."""
    access = ("acl", "auth", "pdp")
    rules_changed = any(getattr(old_settings, key) != getattr(new_settings, key) for key in access)
    kinds = set()
    if rules_changed or old.list_result.tools != new.list_result.tools:
        kinds.add("tools")
    if rules_changed and new.passthrough is not None:
        kinds |= {"prompts", "resources"}
    return frozenset(kinds)
