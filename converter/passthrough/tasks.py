"""MCP tasks (protocol 2025-11-25) through the passthrough, bound to the caller that made them.

A task-augmented `tools/call` of a proxied tool goes to its upstream, which creates the task;
`tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list` are then relayed to that upstream.
The upstream session is shared by every client of this server, so its task ids are never shown:
each task gets an id of ours (random, 192 bits) that maps to (source, upstream id, owner, tool).

- The owner is the authorization context: issuer, subject and client of the token; with auth off,
  the MCP session (one anonymous context on stdio). Another owner's task id, an expired or an
  unknown one all answer `-32602 Failed to retrieve task: Task not found`, and `tasks/list`
  lists only the caller's own tasks (MCP 2025-11-25 tasks, Security Considerations).
- The access rules and scopes of the tool are checked when the task is created and again on
  every later request: a caller who may no longer call the tool no longer sees its tasks.
- Requests the upstream makes of the client while `tasks/result` waits (an elicitation for an
  `input_required` task) reach the calling client as during a call; ids in the related-task
  `_meta` are rewritten both ways.
- The upstream's `notifications/tasks/status` (sent on its GET stream, which the SDK client
  would drop) go to the connection of the client that created the task, with our id.
- Tasks are a 2025-11-25 feature; 2026-07-28 moved them to an extension the SDK does not
  implement yet, so those clients call task tools plainly (the source waits for the task).
"""

from __future__ import annotations

import logging
import secrets
import time
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import mcp.types as types
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from converter.auth.principal import Principal
from converter.errors import ConverterError
from converter.passthrough.source import MAX_PAGES, RELATED_TASK, MCPUpstreamSource
from converter.passthrough.view import NOTIFY_SECONDS, relay
from converter.telemetry.record import current_record


class ToolRoutes(Protocol):
    """Where a proxied tool is served to a caller (the catalog), after the same checks as a call."""

    async def proxied_route(self, name: str, principal: Principal) -> tuple[MCPUpstreamSource | None,
                                                                             dict[str, str]]:
        """(the MCP source or None for an OpenAPI tool, the caller's claim headers).

        Raises: MCPError -32602 for an unknown or forbidden tool; ConverterError for a claim that
        cannot be sent as a header."""
        ...

log = logging.getLogger("openapi_mcp")

MAX_TASKS: Final = 10_000  # tasks remembered at once; the oldest go first
MAX_KEEP_SECONDS: Final = 24 * 3600.0  # a task the upstream keeps for ever is forgotten here after a day
NOT_FOUND: Final = "Failed to retrieve task: Task not found"
CAPABILITY: Final = types.ServerTasksCapability(
    list=types.TasksListCapability(), cancel=types.TasksCancelCapability(),
    requests=types.ServerTasksRequestsCapability(tools=types.TasksToolsCapability(call=types.TasksCallCapability())))


@dataclass(frozen=True, slots=True)
class RelayedTask:
    """One task created through this server: our id, where it runs, whose it is."""

    task_id: str
    upstream_id: str
    source: MCPUpstreamSource
    tool: str  # the served tool name
    owner: Hashable
    expires: float  # monotonic
    # The creating client's connection (weakly): where the upstream's status notifications go.
    notify_to: weakref.ReferenceType[Any] | None = field(default=None, compare=False)


class TaskTable:
    """Our task ids -> the upstream tasks, bounded in number and age."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tasks: dict[str, RelayedTask] = {}  # insertion order: oldest first

    def add(self, source: MCPUpstreamSource, upstream_id: str, tool: str, owner: Hashable,
            ttl_ms: int | None, notify_to: Any = None) -> RelayedTask:
        now = self._clock()
        keep = MAX_KEEP_SECONDS if ttl_ms is None else min(max(ttl_ms, 0) / 1000, MAX_KEEP_SECONDS)
        task = RelayedTask(secrets.token_urlsafe(24), upstream_id, source, tool, owner, now + keep,
                           weakref.ref(notify_to) if notify_to is not None else None)
        self._tasks = {k: t for k, t in self._tasks.items() if t.expires > now}
        while len(self._tasks) >= MAX_TASKS:
            del self._tasks[next(iter(self._tasks))]
        self._tasks[task.task_id] = task
        return task

    def find(self, task_id: str, owner: Hashable) -> RelayedTask | None:
        """The caller's task `task_id`; None for an unknown, expired or someone else's task."""
        task = self._tasks.get(task_id)
        if task is None or task.owner != owner:
            return None
        if task.expires <= self._clock():
            del self._tasks[task_id]
            return None
        return task

    def owned(self, owner: Hashable) -> list[RelayedTask]:
        now = self._clock()
        return [t for t in self._tasks.values() if t.owner == owner and t.expires > now]

    def by_upstream(self, source: MCPUpstreamSource, upstream_id: str) -> RelayedTask | None:
        now = self._clock()
        return next((t for t in reversed(self._tasks.values())
                     if t.source is source and t.upstream_id == upstream_id and t.expires > now), None)

    def forget(self, task_id: str) -> None:
        self._tasks.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._tasks)


def owner_of(principal: Principal, ctx: Any) -> Hashable:
    """The authorization context a task is bound to (see the module docstring)."""
    if principal.is_authenticated:
        return ("token", principal.issuer, principal.subject, principal.client_id)
    request = getattr(ctx, "request", None)
    headers = getattr(request, "headers", None)
    session = headers.get("mcp-session-id") if headers is not None else None
    return ("session", session)


class TaskRelay:
    """The `tasks/*` handlers and the task-augmented `tools/call` middleware."""

    def __init__(self, catalog: ToolRoutes, sources: Sequence[MCPUpstreamSource],
                 principal_of: Callable[[Any], Principal], *,
                 request_relay: Callable[[Any], Any], notification_relay: Callable[[Any], Any],
                 progress_relay: Callable[[Any], Any]) -> None:
        self.catalog = catalog
        self.principal_of = principal_of
        self.table = TaskTable()
        self._request_relay = request_relay
        self._notification_relay = notification_relay
        self._progress_relay = progress_relay
        for source in sources:
            source.task_listeners.append(self._status_changed)

    async def _status_changed(self, source: MCPUpstreamSource, params: dict[str, Any]) -> None:
        """An upstream's `notifications/tasks/status`: to the client that created the task, in our id."""
        task = self.table.by_upstream(source, str(params.get("taskId")))
        connection = task.notify_to() if task is not None and task.notify_to is not None else None
        if task is None or connection is None:
            return  # a task of the upstream's own, or its client is gone: nobody to tell
        with anyio.move_on_after(NOTIFY_SECONDS):
            await connection.notify("notifications/tasks/status", _renamed(params, task))

    async def middleware(self, ctx: Any, call_next: Any) -> Any:
        """A `tools/call` whose params ask for a task (handshake-era sessions) becomes one upstream."""
        params = ctx.params
        if (ctx.method != "tools/call" or not isinstance(params, Mapping) or not isinstance(params.get("task"), Mapping)
                or ctx.protocol_version in MODERN_PROTOCOL_VERSIONS):
            return await call_next(ctx)
        try:
            request = types.CallToolRequestParams.model_validate(params, by_name=False)
        except ValueError:
            return await call_next(ctx)  # the SDK's own validation answers it
        return await self.create(ctx, request)

    async def create(self, ctx: Any, params: types.CallToolRequestParams) -> dict[str, Any]:
        """Raises: MCPError -32602 (unknown or forbidden tool), -32601 (a tool that cannot run as a task)."""
        principal = self.principal_of(ctx)
        source, headers = await self._route(params.name, principal)
        if source is None or source.task_support.get(params.name) not in ("optional", "required"):
            raise MCPError(code=types.METHOD_NOT_FOUND, message=f"Tool {params.name!r} does not support tasks")
        task_params: dict[str, Any] = {}
        if params.task is not None and params.task.ttl is not None:
            task_params["ttl"] = params.task.ttl
        upstream_params = {"name": source.upstream_name(params.name), "arguments": dict(params.arguments or {}),
                           "task": task_params}
        created = await relay(source, "tools/call", source.send(
            "tools/call", upstream_params, headers=headers, progress=self._progress_relay(ctx)))
        try:
            upstream = types.CreateTaskResult.model_validate(created, by_name=False).task
        except ValueError:
            raise MCPError(code=types.INTERNAL_ERROR,
                           message=f"{source.describe()} did not answer the task-augmented call with a task") from None
        task = self.table.add(source, upstream.task_id, params.name, owner_of(principal, ctx), upstream.ttl,
                              notify_to=getattr(ctx.session, "_connection", None))  # the SDK has no public handle
        log.info("task %s created for tool %r on %s (upstream task %s)", task.task_id[:8], params.name,
                 source.describe(), upstream.task_id)
        return {**created, "task": {**created["task"], "taskId": task.task_id}}

    # -- tasks/* --------------------------------------------------------------------------------

    async def _route(self, tool: str, principal: Principal) -> tuple[MCPUpstreamSource | None, dict[str, str]]:
        try:
            return await self.catalog.proxied_route(tool, principal)
        except ConverterError as exc:  # a claim that cannot be a header: refuse, never send without it
            raise MCPError(code=types.INVALID_REQUEST, message=str(exc)) from exc

    async def _task(self, ctx: Any, task_id: str) -> tuple[RelayedTask, dict[str, str]]:
        """The caller's task, if it may still call its tool. Raises: MCPError -32602 otherwise."""
        self._guard_era(ctx)
        principal = self.principal_of(ctx)
        task = self.table.find(task_id, owner_of(principal, ctx))
        record = current_record.get()
        if task is None:
            raise MCPError(code=types.INVALID_PARAMS, message=NOT_FOUND)
        if record is not None:
            record.name = task.tool
        try:
            _, headers = await self._route(task.tool, principal)
        except MCPError:
            raise MCPError(code=types.INVALID_PARAMS, message=NOT_FOUND) from None
        return task, headers

    @staticmethod
    def _guard_era(ctx: Any) -> None:
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:  # the tasks extension is not implemented
            raise MCPError(code=types.METHOD_NOT_FOUND, message="Method not found")

    async def _upstream(self, ctx: Any, task: RelayedTask, method: str, headers: Mapping[str, str],
                        **relays: Any) -> dict[str, Any]:
        try:
            result = await relay(task.source, method, task.source.send(
                method, {"taskId": task.upstream_id}, headers=headers, **relays))
        except MCPError as exc:
            if exc.code == types.INVALID_PARAMS and method == "tasks/get":  # 2025-11-25: unknown task id
                self.table.forget(task.task_id)  # the upstream let it go (expired, restarted)
            raise
        return _renamed(result, task)

    async def get(self, ctx: Any, params: types.GetTaskRequestParams) -> dict[str, Any]:
        task, headers = await self._task(ctx, params.task_id)
        return await self._upstream(ctx, task, "tasks/get", headers)

    async def cancel(self, ctx: Any, params: types.CancelTaskRequestParams) -> dict[str, Any]:
        task, headers = await self._task(ctx, params.task_id)
        return await self._upstream(ctx, task, "tasks/cancel", headers)

    async def result(self, ctx: Any, params: types.GetTaskPayloadRequestParams) -> dict[str, Any]:
        """The task's outcome, as the call would have answered (blocks until the task ends)."""
        task, headers = await self._task(ctx, params.task_id)
        ask = self._request_relay(ctx)

        async def ask_renamed(method: str, request: dict[str, Any]) -> dict[str, Any]:
            answer: dict[str, Any] = await ask(method, _renamed(request, task))
            return answer

        result = await self._upstream(ctx, task, "tasks/result", headers, ask=ask_renamed,
                                      notify=self._notification_relay(ctx))
        record = current_record.get()
        if record is not None:
            record.is_error = result.get("isError") is True
        return result

    async def list(self, ctx: Any, params: types.PaginatedRequestParams) -> dict[str, Any]:
        """The caller's tasks (every page at once: a cursor of ours does not exist)."""
        self._guard_era(ctx)
        if params.cursor is not None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Invalid cursor: {params.cursor!r}")
        principal = self.principal_of(ctx)
        mine = [t for t in self.table.owned(owner_of(principal, ctx)) if await self._may_call(t.tool, principal)]
        tasks: list[dict[str, Any]] = []
        for source in dict.fromkeys(t.source for t in mine):
            ours = {t.upstream_id: t for t in mine if t.source is source}
            for upstream in await relay(source, "tasks/list", _all_tasks(source)):
                task = ours.get(str(upstream.get("taskId"))) if isinstance(upstream, dict) else None
                if task is not None:
                    tasks.append({**upstream, "taskId": task.task_id})
        return {"tasks": tasks}

    async def _may_call(self, tool: str, principal: Principal) -> bool:
        try:
            await self.catalog.proxied_route(tool, principal)
        except (MCPError, ConverterError):
            return False
        return True


async def _all_tasks(source: MCPUpstreamSource) -> list[Any]:
    tasks: list[Any] = []
    params: dict[str, Any] = {}
    for _ in range(MAX_PAGES):
        page = await source.send("tasks/list", params)
        found = page.get("tasks")
        tasks += found if isinstance(found, list) else []
        cursor = page.get("nextCursor")
        if not isinstance(cursor, str):
            break
        params = {"cursor": cursor}
    return tasks


def _renamed(message: dict[str, Any], task: RelayedTask) -> dict[str, Any]:
    """`message` with the upstream's task id replaced by ours (the task itself and the related-task `_meta`)."""
    renamed = dict(message)
    if renamed.get("taskId") == task.upstream_id:
        renamed["taskId"] = task.task_id
    meta = renamed.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get(RELATED_TASK), dict):
        renamed["_meta"] = {**meta, RELATED_TASK: {**meta[RELATED_TASK], "taskId": task.task_id}}
    return renamed
