"""Session signing keys: the model, generation, rotation and pruning, and the stored form.

The filter signs every session token it issues with `keys[0]` and accepts a token signed by
any listed key until that key's `accept_until_ms` (CONTRACT A/B). Rotation therefore puts a
fresh key first and gives every older key a deadline; keys whose deadline has passed are
pruned, so they leave both the stored set and what Envoy receives.

Secrets are `bytes` with `repr=False`: a key printed in a log line, a traceback or a test
failure shows its id, never its secret. Only `to_document` and `filter_block` spell them out.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SECRET_BYTES = 32
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DOCUMENT_VERSION = 1
DEFAULT_TTL_S = 86400
# Ended (DELETEd) sessions each Envoy remembers until they expire (1,024 slots of 256 records,
# ~6 MiB); when full, the oldest are forgotten and verify again (docs/security.md).
DEFAULT_MAX_ENDED = 1024 * 256
DEFAULT_GRACE_S = 3600
# A rotation's grace is capped so a typo cannot keep a retired key alive for years.
MAX_GRACE_S = 366 * 86400
BROKER_CLUSTER = "mcpgw-broker"
BROKER_TIMEOUT_MS = 5000


class KeysInvalid(ValueError):
    """A stored or configured key set cannot be used; the message never contains a secret."""


def encode_secret(secret: bytes) -> str:
    """base64url without padding, the form the filter reads."""
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


def decode_secret(text: str, what: str = "secret") -> bytes:
    """The bytes of a base64url secret (padding optional); exactly 32 of them."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text.strip()):
        raise KeysInvalid(f"{what}: not base64url")
    stripped = text.strip().rstrip("=")
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise KeysInvalid(f"{what}: not base64url") from None
    if len(raw) != SECRET_BYTES:
        raise KeysInvalid(f"{what}: must decode to {SECRET_BYTES} bytes, got {len(raw)}")
    return raw


def iso(ms: int | None) -> str | None:
    """Unix milliseconds as an ISO 8601 UTC timestamp; None and 0 (no value) stay None."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class SessionKey:
    id: str
    secret: bytes = field(repr=False)
    created_ms: int = 0
    # Unix ms after which tokens signed with this key are refused; 0: no end (the signing key).
    accept_until_ms: int = 0

    def expired(self, now_ms: int) -> bool:
        return self.accept_until_ms != 0 and self.accept_until_ms <= now_ms

    def public(self, signing: bool) -> dict[str, Any]:
        """What the admin API and /status show: never the secret."""
        return {
            "id": self.id,
            "created": iso(self.created_ms),
            "accept_until": iso(self.accept_until_ms),
            "signing": signing,
        }


def new_key(now_ms: int, taken: frozenset[str] = frozenset()) -> SessionKey:
    """32 random bytes and a short random id not in `taken`."""
    while True:
        key_id = secrets.token_urlsafe(6)  # 8 characters of [A-Za-z0-9_-]
        if key_id not in taken:
            return SessionKey(key_id, secrets.token_bytes(SECRET_BYTES), now_ms, 0)


def prune(keys: tuple[SessionKey, ...], now_ms: int) -> tuple[SessionKey, ...]:
    """Without the keys whose `accept_until` has passed (the signing key never has one)."""
    return tuple(key for key in keys if not key.expired(now_ms))


def rotate(keys: tuple[SessionKey, ...], now_ms: int, grace_ms: int) -> tuple[SessionKey, ...]:
    """A new signing key first; older keys accepted for `grace_ms` more, expired ones dropped.

    A deadline is never pushed back: a key already retired by an earlier rotation keeps the
    earlier of its deadline and the new one, so rotating twice cannot revive a retired key.
    `grace_ms == 0` retires every older key at once (their sessions end now).
    """
    until = now_ms + grace_ms
    older = tuple(
        SessionKey(
            key.id,
            key.secret,
            key.created_ms,
            min(key.accept_until_ms, until) if key.accept_until_ms else until,
        )
        for key in keys
    )
    fresh = new_key(now_ms, frozenset(key.id for key in keys))
    return prune((fresh, *older), now_ms)


def to_document(keys: tuple[SessionKey, ...]) -> str:
    """The stored form (a keys file, a Redis value): canonical JSON, so equal sets compare equal."""
    return json.dumps(
        {
            "version": DOCUMENT_VERSION,
            "keys": [
                {
                    "id": key.id,
                    "secret": encode_secret(key.secret),
                    "created_ms": key.created_ms,
                    "accept_until_ms": key.accept_until_ms,
                }
                for key in keys
            ],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeysInvalid(f"{where}: must be a non-negative integer")
    return value


def from_document(text: str) -> tuple[SessionKey, ...]:
    """Parse the stored form; raises `KeysInvalid` naming the field (never a secret's value)."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise KeysInvalid(f"not JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(document, dict):
        raise KeysInvalid("must be a JSON object")
    if document.get("version") != DOCUMENT_VERSION:
        raise KeysInvalid(f"version: expected {DOCUMENT_VERSION}, got {document.get('version')!r}")
    entries = document.get("keys")
    if not isinstance(entries, list) or not entries:
        raise KeysInvalid("keys: must be a non-empty list")
    keys: list[SessionKey] = []
    for index, entry in enumerate(entries):
        where = f"keys[{index}]"
        if not isinstance(entry, dict):
            raise KeysInvalid(f"{where}: must be an object")
        key_id = entry.get("id")
        if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
            raise KeysInvalid(f"{where}.id: must match [A-Za-z0-9_-]{{1,32}}")
        if any(key.id == key_id for key in keys):
            raise KeysInvalid(f"{where}.id: {key_id!r} is listed twice")
        keys.append(
            SessionKey(
                key_id,
                decode_secret(entry.get("secret"), f"{where}.secret"),  # type: ignore[arg-type]
                _int(entry.get("created_ms", 0), f"{where}.created_ms"),
                _int(entry.get("accept_until_ms", 0), f"{where}.accept_until_ms"),
            )
        )
    if keys[0].accept_until_ms:
        raise KeysInvalid("keys[0].accept_until_ms: the signing key cannot have an end")
    return tuple(keys)


@dataclass(frozen=True)
class SessionSettings:
    """What every server's filter configuration gets under `sessions` and `broker` (CONTRACT A)."""

    keys: tuple[SessionKey, ...]
    ttl_ms: int = DEFAULT_TTL_S * 1000
    broker_cluster: str = BROKER_CLUSTER
    broker_timeout_ms: int = BROKER_TIMEOUT_MS
    max_ended: int = DEFAULT_MAX_ENDED

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeysInvalid("sessions need at least one key")
        if self.ttl_ms <= 0:
            raise KeysInvalid("session TTL must be positive")
        if self.max_ended <= 0:
            raise KeysInvalid("the ended-session table size must be positive")
