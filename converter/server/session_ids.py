"""Self-contained MCP session IDs: what a session must carry, sealed with AES-256-GCM.

With `server.session_keys` set, the ID a client gets on `initialize` is
`s1.` + base64url(key id (4 bytes) | nonce (12) | ciphertext + tag) of a small JSON document:

- `p`: the client's `initialize` params (protocol version, capabilities, client info): what the
  SDK's `Connection` keeps after the handshake, so another replica can rebuild the session;
- `o`: a digest of the principal the session is bound to (issuer, client id, subject: the SDK's
  `AuthorizationContext`), or null with auth off; another principal's request is a 404 everywhere;
- `x`: the expiry (Unix seconds; `server.session_lifetime` after the handshake).

Encrypted, not only signed: client info and capabilities are the client's business and the
principal digest is no one's; authenticated, so a client cannot forge or alter a session (the
tag covers everything, the format version and the key id included). The first key seals, every
key opens: to rotate, put the new key first, keep the old one for a `session_lifetime`, then
drop it. Each configured secret is stretched to an AES key with HKDF-SHA256, so any long
random string works; the key id is a hash of the derived key (it names the key, reveals nothing).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from mcp.server.auth.middleware.bearer_auth import AuthorizationContext

PREFIX: Final = "s1."
_AAD: Final = b"openapi-mcp session id v1"
_KID_BYTES: Final = 4
_NONCE_BYTES: Final = 12
# nginx reads a request header line into 8 KiB buffers by default; an ID stays far below.
MAX_PLAINTEXT: Final = 2048
_SLIM_CAPABILITIES: Final = ("roots", "sampling", "elicitation", "tasks")
_MAX_ID: Final = 8192  # characters; a longer header is no ID of ours


@dataclass(frozen=True, slots=True)
class SealedSession:
    """What a session ID says, once opened and checked."""

    params: Mapping[str, Any]  # the client's `initialize` params, as it sent them (slimmed if very large)
    owner: str | None  # owner_digest() of the principal, None with auth off
    expires_at: float


def owner_digest(owner: AuthorizationContext | None) -> str | None:
    """A short digest of the SDK's session binding (who may use the session); None when nobody is bound."""
    if owner is None:
        return None
    canonical = json.dumps([owner.get("issuer"), owner.get("client_id"), owner.get("subject")], separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()[:18]).decode()


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_AAD).derive(secret.encode())


def _slim(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of `initialize` params the server reads, for clients that send very large ones."""
    capabilities = params.get("capabilities")
    info = params.get("clientInfo")
    return {
        "protocolVersion": str(params.get("protocolVersion"))[:40],
        "capabilities": {k: v for k, v in capabilities.items() if k in _SLIM_CAPABILITIES}
        if isinstance(capabilities, dict) else {},
        "clientInfo": {k: str(info[k])[:200] for k in ("name", "version") if k in info}
        if isinstance(info, dict) else {},
    }


class SessionSealer:
    """Seals and opens session IDs with `keys` (the first seals, all open)."""

    def __init__(self, keys: Sequence[str], *, lifetime: float, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one session key is needed")
        self._keys: dict[bytes, AESGCM] = {}
        self._sealing_kid = b""
        for index, secret in enumerate(keys):
            key = _derive(secret)
            kid = hashlib.sha256(key).digest()[:_KID_BYTES]
            self._keys.setdefault(kid, AESGCM(key))
            if index == 0:
                self._sealing_kid = kid
        self.lifetime = lifetime
        self._clock = clock

    def __repr__(self) -> str:  # never the keys
        return f"SessionSealer(keys={len(self._keys)}, lifetime={self.lifetime:g})"

    def seal(self, params: Mapping[str, Any], owner: AuthorizationContext | None) -> tuple[str, float]:
        """A new session ID for a client that sent these `initialize` params, and its expiry."""
        expires_at = float(int(self._clock() + self.lifetime))
        document = {"p": dict(params), "o": owner_digest(owner), "x": int(expires_at)}
        plaintext = json.dumps(document, separators=(",", ":")).encode()
        if len(plaintext) > MAX_PLAINTEXT:
            document["p"] = slim = _slim(params)
            plaintext = json.dumps(document, separators=(",", ":")).encode()
            if len(plaintext) > MAX_PLAINTEXT:  # large values inside the capabilities the server reads
                slim["capabilities"] = {k: {} for k in slim["capabilities"]}
                plaintext = json.dumps(document, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        kid = self._sealing_kid
        sealed = self._keys[kid].encrypt(nonce, plaintext, _AAD + kid)
        return PREFIX + base64.urlsafe_b64encode(kid + nonce + sealed).rstrip(b"=").decode(), expires_at

    def open(self, session_id: str) -> SealedSession | None:
        """What `session_id` says, or None: not one of ours, altered, sealed with an unknown key, or expired."""
        if not session_id.startswith(PREFIX) or len(session_id) > _MAX_ID:
            return None
        text = session_id[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        body = _KID_BYTES + _NONCE_BYTES
        kid, nonce, sealed = raw[:_KID_BYTES], raw[_KID_BYTES:body], raw[body:]
        cipher = self._keys.get(kid)
        if cipher is None or len(nonce) != _NONCE_BYTES:
            return None
        try:
            document = json.loads(cipher.decrypt(nonce, sealed, _AAD + kid))
        except (InvalidTag, ValueError):
            return None
        if not isinstance(document, dict):
            return None
        params, owner, expires_at = document.get("p"), document.get("o"), document.get("x")
        if not isinstance(params, dict) or not (owner is None or isinstance(owner, str)) \
                or not isinstance(expires_at, int) or isinstance(expires_at, bool):
            return None
        if expires_at <= self._clock():
            return None
        return SealedSession(params, owner, float(expires_at))


def same_owner(sealed: SealedSession, owner: AuthorizationContext | None) -> bool:
    """The request's principal is the one the session is bound to (both None with auth off)."""
    digest = owner_digest(owner)
    if sealed.owner is None or digest is None:
        return sealed.owner is None and digest is None
    return hmac.compare_digest(sealed.owner, digest)
