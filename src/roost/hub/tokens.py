"""Random bearer tokens, stored only as their SHA-256.

Tokens are 256-bit random (``secrets.token_urlsafe(32)``), so a fast hash is the right tool: no
dictionary to attack. The prefix says what a token is for; it is never logged in clear.
"""

from __future__ import annotations

import hashlib
import secrets

ADMIN_PREFIX = "rst_admin_"
DEVICE_PREFIX = "rst_dev_"
ENROLL_PREFIX = "rst_enroll_"
METRICS_PREFIX = "rst_metrics_"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
