"""The marketplace's seed data, its in-memory state and the generated avatar images.

Everything here is deterministic: five users, each with two to five orders, the same on every
start, so tests and demos can rely on exact values (`u1` is Alice Johnson with three orders).
"""

from __future__ import annotations

import copy
import hashlib
import struct
import zlib
from datetime import UTC, datetime
from typing import Any, Final

JsonObject = dict[str, Any]

SEED_USERS: Final[tuple[JsonObject, ...]] = (
    {"id": "u1", "name": "Alice Johnson", "email": "alice@example.com"},
    {"id": "u2", "name": "Bob Smith", "email": "bob@example.com"},
    {"id": "u3", "name": "Carol Diaz", "email": "carol@example.com"},
    {"id": "u4", "name": "Dan Okafor", "email": "dan@example.com"},
    {"id": "u5", "name": "Eve Martin", "email": "eve@example.com"},
)

# (userId, item, quantity, unit price, status, createdAt, note); order IDs are assigned in
# this order from FIRST_ORDER_NUMBER on, so o1001..o1016.
_SEED_ORDERS: Final[tuple[tuple[str, str, int, float, str, str, str | None], ...]] = (
    ("u1", "Mechanical keyboard", 1, 89.99, "delivered", "2025-01-06T09:30:00Z", None),
    ("u1", "Wireless mouse", 2, 24.5, "shipped", "2025-02-14T16:05:00Z", "Gift wrap, please"),
    ("u1", "USB-C hub", 1, 39.0, "pending", "2025-03-02T11:45:00Z", None),
    ("u2", "27-inch monitor", 1, 249.0, "delivered", "2025-01-20T13:10:00Z", None),
    ("u2", "Monitor arm", 1, 59.95, "pending", "2025-03-11T08:20:00Z", None),
    ("u3", "Noise-cancelling headphones", 1, 199.0, "delivered", "2024-12-18T19:00:00Z", None),
    ("u3", "Coffee beans 1kg", 3, 18.75, "delivered", "2025-01-09T07:55:00Z", "Whole beans"),
    ("u3", "Desk lamp", 1, 34.99, "shipped", "2025-02-02T21:15:00Z", None),
    ("u3", "Notebook A5 dotted", 5, 6.5, "shipped", "2025-02-27T10:00:00Z", None),
    ("u3", "Fountain pen", 1, 45.0, "pending", "2025-03-14T15:30:00Z", None),
    ("u4", "Ergonomic chair", 1, 329.0, "delivered", "2024-11-29T12:00:00Z", "Deliver after 5pm"),
    ("u4", "Laptop stand", 1, 42.0, "delivered", "2025-01-15T17:40:00Z", None),
    ("u4", "Mouse pad", 2, 12.99, "shipped", "2025-02-21T09:05:00Z", None),
    ("u4", "HDMI cable 2m", 3, 9.99, "pending", "2025-03-08T14:25:00Z", None),
    ("u5", "Backpack", 1, 79.0, "delivered", "2025-01-27T18:35:00Z", None),
    ("u5", "Water bottle", 2, 15.0, "pending", "2025-03-05T08:50:00Z", None),
)

FIRST_ORDER_NUMBER: Final = 1001
ORDER_FIELDS: Final = ("item", "quantity", "price", "note")


def _seed_orders() -> list[JsonObject]:
    """Return fresh copies of the seed orders, with their IDs."""
    return [
        {
            "id": f"o{FIRST_ORDER_NUMBER + index}",
            "userId": user_id,
            "item": item,
            "quantity": quantity,
            "price": price,
            "status": status,
            "createdAt": created_at,
            "note": note,
        }
        for index, (user_id, item, quantity, price, status, created_at, note) in enumerate(_SEED_ORDERS)
    ]


class MarketplaceState:
    """The users and orders of one app instance; the handlers are its only writers."""

    def __init__(self) -> None:
        self.users: list[JsonObject] = []
        self.orders: list[JsonObject] = []
        self._next_order_number = FIRST_ORDER_NUMBER
        self.reset()

    def __repr__(self) -> str:
        return f"MarketplaceState(users={len(self.users)}, orders={len(self.orders)})"

    def reset(self) -> None:
        """Go back to the seed data."""
        self.users = copy.deepcopy(list(SEED_USERS))
        self.orders = _seed_orders()
        self._next_order_number = FIRST_ORDER_NUMBER + len(self.orders)

    def find_user(self, user_id: str) -> JsonObject | None:
        """Return the user with this ID, or None."""
        return next((user for user in self.users if user["id"] == user_id), None)

    def orders_of(self, user_id: str) -> list[JsonObject]:
        """Return the user's orders, oldest first (seed order, then creation order)."""
        return [order for order in self.orders if order["userId"] == user_id]

    def find_order(self, user_id: str, order_id: str) -> JsonObject | None:
        """Return the user's order with this ID, or None (also when it belongs to someone else)."""
        return next(
            (o for o in self.orders if o["id"] == order_id and o["userId"] == user_id),
            None,
        )

    def create_order(self, user_id: str, fields: JsonObject) -> JsonObject:
        """Add a pending order for the user and return it."""
        order: JsonObject = {
            "id": f"o{self._next_order_number}",
            "userId": user_id,
            "item": fields["item"],
            "quantity": fields["quantity"],
            "price": fields["price"],
            "status": "pending",
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "note": fields.get("note"),
        }
        self._next_order_number += 1
        self.orders.append(order)
        return order

    def update_order(self, order: JsonObject, fields: JsonObject) -> JsonObject:
        """Apply the given fields to the order and return it."""
        for name in ORDER_FIELDS:
            if name in fields:
                order[name] = fields[name]
        return order

    def delete_order(self, order: JsonObject) -> None:
        """Remove the order."""
        self.orders.remove(order)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """Frame one PNG chunk: length, type, data, CRC-32 of type and data (PNG spec §5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def render_avatar(user_id: str, size: int = 32) -> bytes:
    """Return a small PNG for the user: a two-colour diagonal pattern derived from the ID.

    Built by hand (8-bit RGB, filter type 0 on every row) so the mock needs no imaging library.
    """
    digest = hashlib.sha256(user_id.encode()).digest()
    foreground, background = digest[0:3], bytes(255 - value // 3 for value in digest[3:6])
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter type None
        for x in range(size):
            rows += foreground if (x + y) % 8 < 4 else background
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )
