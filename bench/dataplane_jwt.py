"""A JWT for the data-plane benchmark's `tools/call` row with JWT auth.

An RSA key made here signs one long-lived RS256 token; its public half is the local JWKS
(`jwks: {file: …}`) of the benchmarked server, so Envoy's `jwt_authn` verifies every request
exactly as it would with an IdP's keys (a remote JWKS only changes how the keys arrive).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ISSUER = "https://bench-idp.invalid"
AUDIENCE = "mcpgw-bench"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def make_token(jwks_file: Path) -> str:
    """Writes the JWKS to `jwks_file`; returns a token it verifies (valid for a day)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "bench",
        "alg": "RS256",
        "use": "sig",
        "n": _uint(numbers.n),
        "e": _uint(numbers.e),
    }
    jwks_file.write_text(json.dumps({"keys": [jwk]}))
    now = int(time.time())
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench"}).encode())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench",
        "scope": "tools:call",
        "iat": now,
        "exp": now + 86_400,
    }
    payload = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


def auth_yaml(jwks_file: Path) -> str:
    """The `auth:` block appended to the benchmarked server's document."""
    return f"""auth:
  jwt:
    - issuer: {ISSUER}
      audiences: [{AUDIENCE}]
      jwks: {{file: {jwks_file}}}
"""
