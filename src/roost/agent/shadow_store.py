"""Local shadows kept by the agent: :class:`ShadowStore` (``ROOT/shadows.db``, SQLite, mode 0600)
and :class:`LocalShadows`, the operations the IPC handlers (:mod:`roost.agent.ipc.ops_shadow`) call.

Documents survive agent restarts (and crashes: every accepted update is committed before it is
answered). A deleted shadow's row goes; a later update starts it again at version 1, as
Greengrass' ShadowManager does locally. At most ``max_shadows`` shadows are kept per agent
(``SHADOW_LIMIT`` beyond), each at most ``max_document_size`` bytes (desired + reported).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from roost.agent import shadows
from roost.agent.shadows import ShadowDocument
from roost.errors import ConflictError, InvalidInputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHADOWS: Final = 10_000
DEFAULT_PAGE_SIZE: Final = 25
MAX_PAGE_SIZE: Final = 100

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS shadows (
    thing TEXT NOT NULL,
    shadow TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (thing, shadow)
);
"""


class ShadowStore:
    """The shadows table; one connection, used from the agent's event loop thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():  # owner-only: component users must not read other components' shadows
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, thing: str, shadow: str) -> ShadowDocument | None:
        row = self._db.execute("SELECT document FROM shadows WHERE thing = ? AND shadow = ?",
                               (thing, shadow)).fetchone()
        return None if row is None else ShadowDocument.from_json(json.loads(row[0]))

    def put(self, thing: str, shadow: str, doc: ShadowDocument) -> None:
        self._db.execute(
            "INSERT INTO shadows(thing, shadow, version, document, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(thing, shadow) DO UPDATE SET version = excluded.version, document = excluded.document, "
            "updated_at = excluded.updated_at",
            (thing, shadow, doc.version, json.dumps(doc.to_json(), separators=(",", ":")), time.time()))

    def delete(self, thing: str, shadow: str) -> None:
        self._db.execute("DELETE FROM shadows WHERE thing = ? AND shadow = ?", (thing, shadow))

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM shadows").fetchone()[0])

    def named(self, thing: str, offset: int, limit: int) -> list[str]:
        rows = self._db.execute("SELECT shadow FROM shadows WHERE thing = ? AND shadow != '' ORDER BY shadow "
                                "LIMIT ? OFFSET ?", (thing, limit, offset)).fetchall()
        return [str(r[0]) for r in rows]


@dataclass
class Outcome:
    """An operation's answer document and the local pub/sub messages it causes (topic, JSON)."""

    response: dict[str, Any] | None
    publish: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def encode(doc: Any) -> bytes:
    """Compact UTF-8 JSON (shadow payloads and messages)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


class LocalShadows:
    """Get / update / delete / list shadows with AWS IoT's semantics (see :mod:`roost.agent.shadows`)."""

    def __init__(self, store: ShadowStore, *, max_document_size: int = shadows.DEFAULT_DOCUMENT_SIZE,
                 max_shadows: int = DEFAULT_MAX_SHADOWS) -> None:
        if not 1 <= max_document_size <= shadows.MAX_DOCUMENT_SIZE:
            raise InvalidInputError(f"max_document_size must be 1..{shadows.MAX_DOCUMENT_SIZE} bytes, got "
                                    f"{max_document_size}", code="INVALID_ARGUMENT")
        self.store = store
        self.max_document_size = max_document_size
        self.max_shadows = max_shadows
        self._token_key = secrets.token_bytes(32)  # nextTokens are good for this agent run

    def close(self) -> None:
        self.store.close()

    def get(self, thing: str, shadow: str) -> Outcome:
        doc = self.store.get(thing, shadow)
        if doc is None:
            raise shadows.not_found(thing, shadow)
        answer = doc.get_response(int(time.time()))
        return Outcome(answer, [(shadows.topic_prefix(thing, shadow) + "/get/accepted", answer)])

    def update(self, thing: str, shadow: str, payload: bytes) -> Outcome:
        request = shadows.parse_update(payload)
        current = self.store.get(thing, shadow)
        if current is None and self.store.count() >= self.max_shadows:
            raise ConflictError(f"the agent keeps at most {self.max_shadows} shadows; delete some before creating "
                                f"{shadows.describe(thing, shadow)}", code="SHADOW_LIMIT")
        result = shadows.apply_update(current, request, int(time.time()), self.max_document_size)
        self.store.put(thing, shadow, result.document)
        prefix = shadows.topic_prefix(thing, shadow)
        out = Outcome(result.accepted)
        if result.delta is not None:
            out.publish.append((prefix + "/update/delta", result.delta))
        out.publish.append((prefix + "/update/documents", result.documents))
        out.publish.append((prefix + "/update/accepted", result.accepted))
        return out

    def delete(self, thing: str, shadow: str) -> Outcome:
        doc = self.store.get(thing, shadow)
        if doc is None:
            raise shadows.not_found(thing, shadow)
        self.store.delete(thing, shadow)
        message = {"version": doc.version, "timestamp": int(time.time())}
        return Outcome(None, [(shadows.topic_prefix(thing, shadow) + "/delete/accepted", message)])

    def list_named(self, principal: str, thing: str, page_size: Any, next_token: Any) -> dict[str, Any]:
        if page_size is None:
            size = DEFAULT_PAGE_SIZE
        elif isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidInputError(f"pageSize must be an integer from 1 to {MAX_PAGE_SIZE}, got {page_size!r}",
                                    code="SHADOW_INVALID_PAGE_SIZE")
        else:
            size = page_size
        offset = 0
        if next_token not in (None, ""):
            offset = self._offset(next_token, principal, thing)
        names = self.store.named(thing, offset, size)
        answer: dict[str, Any] = {"results": names, "timestamp": time.time()}
        if len(names) == size:
            answer["nextToken"] = self._token(offset + size, principal, thing)
        return answer

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self._token_key, body, hashlib.sha256).digest()[:16]

    def _token(self, offset: int, principal: str, thing: str) -> str:
        body = json.dumps([offset, principal, thing]).encode()
        return base64.urlsafe_b64encode(self._sign(body) + body).decode()

    def _offset(self, token: Any, principal: str, thing: str) -> int:
        bad = InvalidInputError("nextToken is not a token this agent gave for this thing and caller (tokens do not "
                                "survive an agent restart; list again from the start)",
                                code="SHADOW_INVALID_NEXT_TOKEN")
        if not isinstance(token, str) or len(token) > 1024:
            raise bad
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except (binascii.Error, ValueError) as err:
            raise bad from err
        sig, body = raw[:16], raw[16:]
        if not hmac.compare_digest(sig, self._sign(body)):
            raise bad
        offset, who, what = json.loads(body)
        if who != principal or what != thing or not isinstance(offset, int):
            raise bad
        return offset
