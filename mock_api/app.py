"""The marketplace demo API: a Starlette app that implements `marketplace.yaml`.

Requests are routed by the OpenAPI document itself: `ValidatingMiddleware` matches each request
to an operation and validates it, and `dispatch` calls the handler registered for that
operation's `operationId` with openapi-core's unmarshalled (typed) parameters and body. So the
app serves exactly the document's operations, and a request the document does not allow never
reaches a handler.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mock_api.data import JsonObject, MarketplaceState, render_avatar
from mock_api.document import load_document
from mock_api.requestlog import (
    ALL_METHODS,
    RequestLog,
    ValidatingMiddleware,
    debug_routes,
    error_response,
    json_error_handlers,
    not_routed,
    outcome_of,
)
from mock_api.validation import RequestValidator, ValidationOutcome

SPEC_PATH: Final = Path(__file__).with_name("marketplace.yaml")
API_NAME: Final = "Sample Users API"

Handler = Callable[[MarketplaceState, ValidationOutcome], Response]


def _user_not_found(user_id: str) -> Response:
    return error_response(404, f"user {user_id!r} not found")


def _get_api_info(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    return JSONResponse({"name": API_NAME})


def _list_users(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    user_id = outcome.parameters["query"].get("id")
    return JSONResponse([user for user in state.users if user_id is None or user["id"] == user_id])


def _get_user(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    user_id = outcome.parameters["path"]["userId"]
    user = state.find_user(user_id)
    return JSONResponse(user) if user else _user_not_found(user_id)


def _get_user_avatar(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    user_id = outcome.parameters["path"]["userId"]
    if state.find_user(user_id) is None:
        return _user_not_found(user_id)
    return Response(render_avatar(user_id), media_type="image/png")


def _orders_response(state: MarketplaceState, user_id: str) -> Response:
    if state.find_user(user_id) is None:
        return _user_not_found(user_id)
    return JSONResponse(state.orders_of(user_id))


def _list_user_orders(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    return _orders_response(state, outcome.parameters["path"]["userId"])


def _list_orders_by_user(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    return _orders_response(state, outcome.parameters["query"]["userid"])


def _create_order(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    user_id = outcome.parameters["path"]["userId"]
    if state.find_user(user_id) is None:
        return _user_not_found(user_id)
    return JSONResponse(state.create_order(user_id, dict(outcome.body)), status_code=201)


def _find_order(state: MarketplaceState, outcome: ValidationOutcome) -> JsonObject | Response:
    user_id, order_id = outcome.parameters["path"]["userId"], outcome.parameters["path"]["orderId"]
    if state.find_user(user_id) is None:
        return _user_not_found(user_id)
    order = state.find_order(user_id, order_id)
    return order if order else error_response(404, f"order {order_id!r} of user {user_id!r} not found")


def _update_order(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    order = _find_order(state, outcome)
    if isinstance(order, Response):
        return order
    return JSONResponse(state.update_order(order, dict(outcome.body)))


def _delete_order(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    order = _find_order(state, outcome)
    if isinstance(order, Response):
        return order
    state.delete_order(order)
    return Response(status_code=204)


def _search_orders(state: MarketplaceState, outcome: ValidationOutcome) -> Response:
    query, headers = outcome.parameters["query"], outcome.parameters["header"]
    tags = [tag.lower() for tag in query.get("tags") or []]
    statuses = query.get("status")
    price_filter = dict(query.get("filter") or {})
    low, high = price_filter.get("minPrice", 0), price_filter.get("maxPrice", float("inf"))
    orders = [
        order
        for order in sorted(state.orders, key=lambda order: int(order["id"][1:]))
        if (not tags or any(tag in order["item"].lower() for tag in tags))
        and (not statuses or order["status"] in statuses)
        and low <= order["price"] <= high
    ]
    sort_keys: list[str] = query.get("sort") or []
    for key in reversed(sort_keys):  # stable sorts, least significant key first
        orders.sort(key=operator.itemgetter(key.lstrip("-")), reverse=key.startswith("-"))
    orders = orders[: query["limit"]]
    request_id = headers.get("X-Request-Id")
    body: JsonObject = {
        "query": {
            "tags": query.get("tags"),
            "status": statuses,
            "filter": price_filter if "filter" in query else None,
            "sort": query.get("sort"),
            "limit": query["limit"],
            "requestId": request_id,
        },
        "count": len(orders),
        "orders": orders,
    }
    return JSONResponse(body, headers={"X-Request-Id": request_id} if request_id else None)


HANDLERS: Final[dict[str, Handler]] = {
    "getApiInfo": _get_api_info,
    "listUsers": _list_users,
    "getUser": _get_user,
    "getUserAvatar": _get_user_avatar,
    "listUserOrders": _list_user_orders,
    "listOrdersByUser": _list_orders_by_user,
    "createOrder": _create_order,
    "updateOrder": _update_order,
    "deleteOrder": _delete_order,
    "searchOrders": _search_orders,
}


def create_app(spec_path: str | Path | None = None) -> Starlette:
    """Create the marketplace API with fresh in-memory state.

    Args:
        spec_path: the OpenAPI document to serve and validate against; defaults to the
            bundled `marketplace.yaml`. Its operationIds must be those in `HANDLERS`.

    Raises:
        DocumentError: the document cannot be read or is not valid OpenAPI 3.x.
    """
    path = Path(spec_path) if spec_path is not None else SPEC_PATH
    document = load_document(path)
    validator = RequestValidator(document, source=str(path), base_uri=path.resolve().as_uri())
    state = MarketplaceState()
    log = RequestLog()

    async def openapi_json(request: Request) -> Response:
        # The document as loaded, but pointing at wherever this instance is being served;
        # default=str covers values YAML turns into dates.
        served: dict[str, Any] = {**document, "servers": [{"url": str(request.base_url).rstrip("/")}]}
        return Response(json.dumps(served, default=str), media_type="application/json")

    async def dispatch(request: Request) -> Response:
        outcome = outcome_of(request)
        if outcome.operation is None:
            return not_routed(outcome, request)
        handler = HANDLERS.get(outcome.operation.operation_id or "")
        if handler is None:
            return error_response(501, f"operation {outcome.operation.to_json()} is not implemented")
        return handler(state, outcome)

    app = Starlette(
        routes=[
            *debug_routes(log, state.reset),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/{path:path}", dispatch, methods=ALL_METHODS),
        ],
        middleware=[Middleware(ValidatingMiddleware, validator=validator, log=log)],
        exception_handlers=json_error_handlers(),
    )
    app.state.marketplace = state
    app.state.request_log = log
    return app
