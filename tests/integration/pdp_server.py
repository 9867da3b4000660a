"""A real AuthZEN 1.0 PDP for the tests: the evaluation API in front of the Cedar policy engine (`cedarpy`).

    python tests/integration/pdp_server.py --port P --client-id mcp-server --client-secret s3cret \
        [--prefix /demo] [--tuple "user:alice reader tool:get_weather" ...]

Facts are OpenFGA-style relationship tuples, as in the Gravitee AM docs (`user:alice reader
tool:get_weather`); they become Cedar entities (the object gets a set attribute per relation,
`group:g#member` usersets and `user:u member group:g` become Cedar parents), and the policies
below play the part of an OpenFGA authorization model:

- `reader` and `admin` of an object may do anything with it (AM's `can_access`, any MCP method);
- `viewer` may only see it in lists (`tools/list`, `resources/list`, `prompts/list`);
- the agent `blocked-agent` (COAZ `context.agent`) is refused everything;
- a call whose `resource.properties.city` (a tool argument) is `Mordor` is refused;
- a subject whose `subject.properties.roles` holds `admin` may do anything.

AuthZEN subject/resource types map to Cedar types (`user` and `identity` -> `User`, `client` ->
`Client`, `tool` -> `Tool`, `resource` -> `Resource`, `prompt` -> `Prompt`); `action.name`
is the Cedar action id; the AuthZEN context plus `subject_properties` / `resource_properties`
is the Cedar context.

Endpoints: `POST {prefix}/access/v1/evaluation` and `POST {prefix}/access/v1/evaluations` (AuthZEN
1.0 §6/§7: top-level defaults, per-item overrides, `options.evaluations_semantic`), both
behind client authentication: HTTP Basic (what AM requires), `Bearer <client secret>`, or
`client_id`/`client_secret` in the JSON body; answers carry AM's headers (`Cache-Control:
no-store`, `Pragma: no-cache`, `X-Request-ID` echoed).

Test controls (no auth, loopback only): `POST /__pdp/mode {"mode": ..., "delay": s}` with mode
`ok`, `slow` (answer after `delay`), `error500`, `garbage` (200, not JSON), `string` (decision
`"true"`), `no_batch` (404 on the batch endpoint), `short_batch` (one evaluation missing),
`am_example` (AM's documented example answer); `POST /__pdp/tuples {"tuples": [...]}`;
`GET /__pdp/requests` (every AuthZEN request: path, auth method, X-Request-ID, body);
`POST /__pdp/reset`; `GET /__pdp/health`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import secrets
from typing import Any, Final
from urllib.parse import unquote

POLICIES: Final = """
permit (principal, action, resource)
when { resource has reader && principal in resource.reader };

permit (principal, action, resource)
when { resource has admin && principal in resource.admin };

permit (principal, action in [Action::"tools/list", Action::"resources/list", Action::"prompts/list"], resource)
when { resource has viewer && principal in resource.viewer };

permit (principal, action, resource)
when { context has subject_properties && context.subject_properties has roles &&
       context.subject_properties.roles.contains("admin") };

forbid (principal, action, resource)
when { context has agent && context.agent == "blocked-agent" };

forbid (principal, action, resource)
when { context has resource_properties && context.resource_properties has city &&
       context.resource_properties.city == "Mordor" };
"""

TYPES: Final = {"user": "User", "identity": "User", "client": "Client", "group": "Group", "tool": "Tool",
                "resource": "Resource", "prompt": "Prompt"}
AM_EXAMPLE: Final = {"decision": True, "context": {"reason": "User has admin role",
                                                   "expires_at": "2024-12-31T23:59:59Z"}}
MAX_LOG: Final = 2000


def cedar_type(authzen_type: str) -> str:
    return TYPES.get(authzen_type, authzen_type[:1].upper() + authzen_type[1:])


def _ref(text: str) -> tuple[str, str, str | None]:
    """`type:id` or `type:id#relation` -> (Cedar type, id, relation)."""
    kind, _, rest = text.partition(":")
    ident, _, relation = rest.partition("#")
    if not kind or not ident:
        raise ValueError(f"{text!r} is not type:id")
    return cedar_type(kind), ident, relation or None


def entities_from_tuples(tuples: list[str]) -> list[dict[str, Any]]:
    """Cedar entities (JSON form) for relationship tuples `subject relation object`."""
    entities: dict[tuple[str, str], dict[str, Any]] = {}

    def entity(kind: str, ident: str) -> dict[str, Any]:
        return entities.setdefault((kind, ident), {"uid": {"type": kind, "id": ident}, "attrs": {}, "parents": []})

    for line in tuples:
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{line!r} is not 'subject relation object'")
        (s_kind, s_id, _), relation, (o_kind, o_id, _) = _ref(parts[0]), parts[1], _ref(parts[2])
        subject = entity(s_kind, s_id)
        obj = entity(o_kind, o_id)
        if relation == "member":  # user:bob member group:finance -> Bob in Group::"finance"
            subject["parents"].append({"type": o_kind, "id": o_id})
        else:  # group:finance#member reader tool:x -> every member is a reader (Cedar `in`)
            obj["attrs"].setdefault(relation, []).append({"__entity": {"type": s_kind, "id": s_id}})
    return list(entities.values())


def cedar_value(value: Any) -> Any:
    """A JSON value Cedar accepts in a context: floats become strings, nulls go."""
    if isinstance(value, dict):
        return {k: cedar_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [cedar_value(v) for v in value if v is not None]
    if isinstance(value, float):
        return repr(value)
    return value


class BadRequestError(Exception):
    pass


def _entity(part: Any, what: str) -> dict[str, str]:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str) or not isinstance(part.get("id"), str):
        raise BadRequestError(f"{what} needs a string type and id")
    return part


def cedar_request(evaluation: dict[str, Any]) -> dict[str, Any]:
    subject = _entity(evaluation.get("subject"), "subject")
    resource = _entity(evaluation.get("resource"), "resource")
    action = evaluation.get("action")
    if not isinstance(action, dict) or not isinstance(action.get("name"), str):
        raise BadRequestError("action needs a string name")
    context = evaluation.get("context") or {}
    if not isinstance(context, dict):
        raise BadRequestError("context must be an object")
    context = dict(context)
    if isinstance(subject.get("properties"), dict):
        context["subject_properties"] = subject["properties"]
    if isinstance(resource.get("properties"), dict):
        context["resource_properties"] = resource["properties"]
    return {
        "principal": {"type": cedar_type(subject["type"]), "id": subject["id"]},
        "action": {"type": "Action", "id": action["name"]},
        "resource": {"type": cedar_type(resource["type"]), "id": resource["id"]},
        "context": cedar_value(context),
    }


def build_app(*, client_id: str, client_secret: str, prefix: str, tuples: list[str]) -> Any:
    import cedarpy
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    policies = cedarpy.PolicySet.from_str(POLICIES) if hasattr(cedarpy.PolicySet, "from_str") else POLICIES
    state: dict[str, Any] = {"mode": "ok", "delay": 0.0, "log": [], "tuples": list(tuples),
                             "entities": entities_from_tuples(tuples)}

    def authenticate(request: Request, body: dict[str, Any]) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            ok = secrets.compare_digest(unquote(user), client_id) and secrets.compare_digest(unquote(password),
                                                                                            client_secret)
            return "basic" if ok else None
        if scheme.lower() == "bearer":
            return "bearer" if secrets.compare_digest(value, client_secret) else None
        if "client_id" in body or "client_secret" in body:
            ok = body.pop("client_id", None) == client_id and body.pop("client_secret", None) == client_secret
            return "post" if ok else None
        return None

    def decide(evaluation: dict[str, Any]) -> dict[str, Any]:
        result = cedarpy.is_authorized(cedar_request(evaluation), policies, state["entities"])
        if result.allowed:
            return {"decision": True}
        return {"decision": False, "context": {"reason": "no policy permits this" if not result.diagnostics.reasons
                                               else "a policy forbids this"}}

    def answer(payload: Any, request_id: str | None, status: int = 200) -> Response:
        headers = {"cache-control": "no-store", "pragma": "no-cache"}
        if request_id:
            headers["x-request-id"] = request_id
        return JSONResponse(payload, status_code=status, headers=headers)

    async def evaluate(request: Request) -> Response:
        batch = request.url.path.endswith("/evaluations")
        request_id = request.headers.get("x-request-id")
        raw = await request.body()
        entry: dict[str, Any] = {"path": request.url.path, "request_id": request_id,
                                 "content_type": request.headers.get("content-type"), "auth": None, "body": None}
        state["log"].append(entry)
        del state["log"][:-MAX_LOG]
        try:
            body = json.loads(raw)
        except ValueError:
            return answer({"error": "invalid_request", "error_description": "body is not JSON"}, request_id, 400)
        if not isinstance(body, dict):
            return answer({"error": "invalid_request"}, request_id, 400)
        entry["auth"] = authenticate(request, body)
        entry["body"] = body
        if entry["auth"] is None:
            return answer({"error": "invalid_client"}, request_id, 401)
        mode = state["mode"]
        if mode == "slow":
            await asyncio.sleep(state["delay"])
        elif mode == "error500":
            return answer({"error": "server_error"}, request_id, 500)
        elif mode == "garbage":
            return PlainTextResponse("<html>upstream exploded</html>", headers={"x-request-id": request_id or ""})
        elif mode == "no_batch" and batch:
            return answer({"error": "not_found"}, request_id, 404)
        elif mode == "am_example" and not batch:
            return answer(AM_EXAMPLE, request_id)
        try:
            if not batch:
                result = decide(body)
                return answer({"decision": "true"} if mode == "string" else result, request_id)
            items = body.get("evaluations")
            if not isinstance(items, list) or not items:
                raise BadRequestError("evaluations must be a non-empty array")
            semantic = (body.get("options") or {}).get("evaluations_semantic", "execute_all")
            defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
            results = []
            for item in items:
                if not isinstance(item, dict):
                    raise BadRequestError("each evaluation must be an object")
                result = decide({**defaults, **item})
                results.append({"decision": "true"} if mode == "string" else result)
                if (semantic == "deny_on_first_deny" and not result["decision"]) or (
                        semantic == "permit_on_first_permit" and result["decision"]):
                    break
            if mode == "short_batch":
                results = results[:-1]
            return answer({"evaluations": results}, request_id)
        except BadRequestError as exc:
            return answer({"error": "invalid_request", "error_description": str(exc)}, request_id, 400)

    async def set_mode(request: Request) -> Response:
        body = await request.json()
        state["mode"] = body["mode"]
        state["delay"] = float(body.get("delay", 0))
        return JSONResponse({"mode": state["mode"]})

    async def set_tuples(request: Request) -> Response:
        body = await request.json()
        state["entities"] = entities_from_tuples(body["tuples"])
        state["tuples"] = list(body["tuples"])
        return JSONResponse({"tuples": len(state["tuples"])})

    async def requests_log(request: Request) -> Response:
        return JSONResponse(state["log"])

    async def reset(request: Request) -> Response:
        state.update(mode="ok", delay=0.0, log=[], tuples=list(tuples), entities=entities_from_tuples(tuples))
        return JSONResponse({"reset": True})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    prefix = prefix.rstrip("/")
    return Starlette(routes=[
        Route(f"{prefix}/access/v1/evaluation", evaluate, methods=["POST"]),
        Route(f"{prefix}/access/v1/evaluations", evaluate, methods=["POST"]),
        Route("/__pdp/mode", set_mode, methods=["POST"]),
        Route("/__pdp/tuples", set_tuples, methods=["POST"]),
        Route("/__pdp/requests", requests_log, methods=["GET"]),
        Route("/__pdp/reset", reset, methods=["POST"]),
        Route("/__pdp/health", health, methods=["GET"]),
    ])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="AuthZEN 1.0 test PDP over Cedar")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--tuple", action="append", default=[], dest="tuples")
    args = parser.parse_args()
    app = build_app(client_id=args.client_id, client_secret=args.client_secret, prefix=args.prefix,
                    tuples=args.tuples)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
