"""Local shadow documents as AWS IoT's Device Shadow service and Greengrass' ShadowManager define
them: pure functions over JSON values (no I/O), unit-testable on their own.

A stored shadow is a :class:`ShadowDocument`: ``desired`` and ``reported`` state (objects or
absent), their ``metadata`` (a ``{"timestamp": epoch seconds}`` node per leaf, arrays as arrays
of nodes) and a ``version``. :func:`apply_update` merges an update request into it:

* ``state.desired`` / ``state.reported`` are merged key by key; a ``null`` value deletes the key,
  and so does an empty object (``{}``), as ShadowManager treats both as "missing"; arrays and
  values replace what was there; ``"state": null`` clears both sections;
* ``version`` goes up by one per accepted update; an update that names a ``version`` is applied
  only if it equals the stored one (else :class:`~roost.errors.ConflictError`, the service's
  409), and a shadow that does not exist yet accepts only ``version: 1``;
* ``delta`` is the part of ``desired`` that ``reported`` does not match (numbers compared by
  value, ``1 == 1.0``, never ``true == 1``);
* limits: ``desired`` + ``reported`` serialised at most :data:`DEFAULT_DOCUMENT_SIZE` bytes
  (ShadowManager's ``shadowDocumentSizeLimitBytes``; at most :data:`MAX_DOCUMENT_SIZE`), state
  nesting at most :data:`MAX_DEPTH` levels, ``clientToken`` at most 64 characters.

Errors carry stable codes; :func:`http_status` gives the status AWS IoT puts in ``/rejected``
messages (400, 401, 404, 409, 413).
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from roost.errors import ConflictError, InvalidInputError, NotFoundError, RoostError, UnauthorizedError

#: Deepest nesting of ``state.desired`` / ``state.reported`` (the section itself is level 1).
MAX_DEPTH: Final = 6
#: ShadowManager's default ``shadowDocumentSizeLimitBytes`` (desired + reported, serialised).
DEFAULT_DOCUMENT_SIZE: Final = 8 * 1024
#: The largest ``shadowDocumentSizeLimitBytes`` ShadowManager accepts.
MAX_DOCUMENT_SIZE: Final = 30 * 1024
MAX_THING_NAME: Final = 128
MAX_SHADOW_NAME: Final = 64
MAX_CLIENT_TOKEN: Final = 64
NAME_PATTERN: Final = "[a-zA-Z0-9:_-]+"
_NAME_RE: Final = re.compile(NAME_PATTERN)
#: The service name ShadowManager publishes its local pub/sub messages as (and its policy service).
SHADOW_MANAGER: Final = "aws.greengrass.ShadowManager"
CLASSIC: Final = ""

_SECTIONS: Final = ("desired", "reported")


def http_status(err: BaseException) -> int:
    """The status AWS IoT gives this error in a ``/rejected`` message (500 when it is not one of ours)."""
    if isinstance(err, RoostError) and err.code == "SHADOW_DOCUMENT_TOO_LARGE":
        return 413
    if isinstance(err, UnauthorizedError):
        return 401
    if isinstance(err, ConflictError):
        return 409
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, InvalidInputError):
        return 400
    return 500


def invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="SHADOW_INVALID_DOCUMENT")


def invalid_name(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="SHADOW_INVALID_NAME")


# -- names and topics ----------------------------------------------------------------------------


def _checked_name(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise invalid_name(f"{field} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise invalid_name(f"{field} has a maximum length of {limit} (got {len(value)})")
    if not _NAME_RE.fullmatch(value):
        raise invalid_name(f"{field} {value!r} must match the pattern {NAME_PATTERN}")
    return value


def validate_thing_name(value: Any) -> str:
    if value is None or value == "":
        raise invalid_name("thingName is required")
    return _checked_name(value, "thingName", MAX_THING_NAME)


def validate_shadow_name(value: Any) -> str:
    """The shadow name; ``''`` (also for an absent name) is the thing's classic shadow."""
    if value is None or value == "":
        return CLASSIC
    return _checked_name(value, "shadowName", MAX_SHADOW_NAME)


def topic_prefix(thing: str, shadow: str) -> str:
    """``$aws/things/T/shadow`` (classic) or ``$aws/things/T/shadow/name/S``: topics and policy resources."""
    if shadow == CLASSIC:
        return f"$aws/things/{thing}/shadow"
    return f"$aws/things/{thing}/shadow/name/{shadow}"


def describe(thing: str, shadow: str) -> str:
    return f"the classic shadow of {thing}" if shadow == CLASSIC else f"shadow {shadow} of {thing}"


# -- JSON helpers --------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    """ShadowManager's "null or missing": ``null`` and the empty object."""
    return value is None or (isinstance(value, dict) and not value)


def _prune(value: dict[str, Any]) -> dict[str, Any]:
    """A copy without null / empty-object members (recursively: nothing left of a member drops it)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            item = _prune(item)
        if not _missing(item):
            out[key] = copy.deepcopy(item)
    return out


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge ``patch`` into ``target`` in place (null / ``{}`` delete, objects recurse, the rest replaces)."""
    for key, value in patch.items():
        if _missing(value):
            target.pop(key, None)
            continue
        current = target.get(key)
        if isinstance(value, dict):
            if isinstance(current, dict):
                merge(current, value)
                if not current:
                    del target[key]
                continue
            pruned = _prune(value)
            if pruned:
                target[key] = pruned
            else:
                target.pop(key, None)
            continue
        target[key] = copy.deepcopy(value)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``1 == 1.0``), booleans only equal booleans."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def delta(desired: dict[str, Any] | None, reported: dict[str, Any] | None) -> dict[str, Any] | None:
    """The members of ``desired`` that ``reported`` lacks or holds differently (None: in sync)."""
    if not desired:
        return None
    if not reported:
        return copy.deepcopy(desired)
    out: dict[str, Any] = {}
    for key, want in desired.items():
        have = reported.get(key)
        if have is None:
            out[key] = copy.deepcopy(want)
        elif isinstance(want, dict) and isinstance(have, dict):
            sub = delta(want, have)
            if sub:
                out[key] = sub
        elif not _same(want, have):
            out[key] = copy.deepcopy(want)
    return out or None


def _meta_patch(value: Any, now: int) -> Any:
    """The metadata of an update's values: a timestamp node per leaf (arrays element by element)."""
    if isinstance(value, dict):
        return {k: _meta_patch(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_meta_patch(v, now) for v in value]
    return {"timestamp": now}


def _is_meta_node(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("timestamp"), int)


def _merge_meta(meta: dict[str, Any], patch: dict[str, Any], state: dict[str, Any]) -> None:
    """Fold an update's metadata into the stored metadata, keeping it the shape of ``state``."""
    for key, node in patch.items():
        if key not in state:
            meta.pop(key, None)
            continue
        value = state[key]
        if isinstance(value, dict) and isinstance(node, dict) and not _is_meta_node(node):
            sub = meta.get(key)
            if not isinstance(sub, dict) or _is_meta_node(sub):
                sub = {}
            _merge_meta(sub, node, value)
            meta[key] = sub
        else:
            meta[key] = node


def _delta_meta(delta_value: Any, meta: Any) -> Any:
    if isinstance(delta_value, dict) and isinstance(meta, dict):
        return {k: _delta_meta(v, meta.get(k)) for k, v in delta_value.items()}
    return meta


def _check_depth(node: Any, level: int, section: str) -> None:
    if isinstance(node, dict | list) and node:
        if level > MAX_DEPTH:
            raise InvalidInputError(f"state.{section} contains too many levels of nesting; the maximum is "
                                    f"{MAX_DEPTH}", code="SHADOW_DEPTH_EXCEEDED")
        for child in node.values() if isinstance(node, dict) else node:
            _check_depth(child, level + 1, section)


def _size(value: dict[str, Any] | None) -> int:
    return 0 if not value else len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _no_nan(value: Any) -> Any:
    raise invalid(f"the shadow document is not valid JSON: {value} is not a JSON number")


def parse_json(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid(f"the shadow document is not UTF-8: {err}") from err
    try:
        return json.loads(text, parse_constant=_no_nan)
    except json.JSONDecodeError as err:
        raise invalid(f"the shadow document is not valid JSON: {err}") from err


# -- documents -----------------------------------------------------------------------------------


@dataclass
class ShadowDocument:
    """One stored shadow (state sections and their metadata: objects, or None when absent)."""

    version: int
    desired: dict[str, Any] | None = None
    reported: dict[str, Any] | None = None
    meta_desired: dict[str, Any] | None = None
    meta_reported: dict[str, Any] | None = None

    def state(self, with_delta: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.desired:
            out["desired"] = self.desired
        if self.reported:
            out["reported"] = self.reported
        if with_delta:
            d = delta(self.desired, self.reported)
            if d:
                out["delta"] = d
        return out

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.meta_desired:
            out["desired"] = self.meta_desired
        if self.meta_reported:
            out["reported"] = self.meta_reported
        return out

    def to_json(self) -> dict[str, Any]:
        """The stored form (and the ``previous`` / ``current`` of a ``/documents`` message)."""
        return {"state": self.state(), "metadata": self.metadata(), "version": self.version}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ShadowDocument:
        state = doc.get("state") or {}
        meta = doc.get("metadata") or {}
        return cls(int(doc["version"]), state.get("desired") or None, state.get("reported") or None,
                   meta.get("desired") or None, meta.get("reported") or None)

    def get_response(self, now: int) -> dict[str, Any]:
        """The GetThingShadow answer (and ``/get/accepted``)."""
        return {"state": self.state(with_delta=True), "metadata": self.metadata(), "version": self.version,
                "timestamp": now}

    def size(self) -> int:
        """Bytes of ``desired`` + ``reported`` serialised: what the document size limit bounds."""
        return _size(self.desired) + _size(self.reported)


@dataclass
class UpdateRequest:
    """A parsed, validated UpdateThingShadow payload."""

    state: dict[str, Any] | None
    version: int | None = None
    client_token: str | None = None
    #: The ``state`` member as sent (minus ``delta``): echoed in the answer.
    raw_state: Any = None


def client_token_of(payload: bytes) -> str | None:
    """The ``clientToken`` of a payload, if it has a usable one (for ``/rejected`` messages)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    token = doc.get("clientToken") if isinstance(doc, dict) else None
    return token if isinstance(token, str) and len(token) <= MAX_CLIENT_TOKEN else None


def parse_update(payload: bytes) -> UpdateRequest:
    """Validate an update request document (schema, depth, version, clientToken)."""
    if not payload:
        raise invalid("the update payload is missing (payload must hold a shadow document)")
    doc = parse_json(payload)
    if not isinstance(doc, dict) or not doc:
        raise invalid("the shadow document must be a non-empty JSON object")
    if "state" not in doc:
        raise invalid("the shadow document has no state member (required)")
    state = doc["state"]
    if state is not None and not isinstance(state, dict):
        raise invalid(f"state must be an object or null, got {type(state).__name__}")
    if isinstance(state, dict):
        state = {k: v for k, v in state.items() if k != "delta"}  # delta is not the caller's to set
        unknown = sorted(set(state) - set(_SECTIONS))
        if unknown:
            raise invalid(f"state may hold only desired and reported, not {', '.join(unknown)}")
        for section in _SECTIONS:
            if section in state:
                value = state[section]
                if value is not None and not isinstance(value, dict):
                    raise invalid(f"state.{section} must be an object or null, got {type(value).__name__}")
                _check_depth(value, 1, section)
    version = doc.get("version")
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int | float) or not math.isfinite(version) \
                or version < 0 or version != int(version):
            raise InvalidInputError(f"version must be a non-negative integer, got {version!r}",
                                    code="SHADOW_INVALID_VERSION")
        version = int(version)
    token = doc.get("clientToken")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_CLIENT_TOKEN):
        raise InvalidInputError(f"clientToken must be a string of at most {MAX_CLIENT_TOKEN} characters",
                                code="SHADOW_INVALID_CLIENT_TOKEN")
    return UpdateRequest(state, version, token, doc["state"] if state is None else state)


@dataclass
class UpdateResult:
    """What an accepted update produced: the new document and the messages to publish."""

    document: ShadowDocument
    accepted: dict[str, Any]
    documents: dict[str, Any]
    delta: dict[str, Any] | None = None


def apply_update(current: ShadowDocument | None, request: UpdateRequest, now: int,
                 max_size: int = DEFAULT_DOCUMENT_SIZE) -> UpdateResult:
    """Apply ``request`` to ``current`` (None: the shadow does not exist yet); ``now`` in epoch seconds."""
    if request.version is not None:
        if current is None and request.version != 1:
            raise InvalidInputError(f"invalid version {request.version}: the shadow does not exist yet, so the "
                                    "only version an update may name is 1", code="SHADOW_INVALID_VERSION")
        if current is not None and request.version != current.version:
            raise ConflictError(f"version conflict: the update names version {request.version}, the shadow "
                                f"is at version {current.version}", code="SHADOW_VERSION_CONFLICT")
    doc = copy.deepcopy(current) if current is not None else ShadowDocument(version=0)
    state = request.state
    patch_meta: dict[str, Any] = {}
    if state is None:
        doc.desired = doc.reported = doc.meta_desired = doc.meta_reported = None
    else:
        patch_meta = _meta_patch(state, now)
        for section in _SECTIONS:
            if section not in state:
                continue
            value = state[section]
            target = getattr(doc, section) or {}
            meta = getattr(doc, "meta_" + section) or {}
            if _missing(value):
                target, meta = {}, {}
            else:
                merge(target, value)
                _merge_meta(meta, patch_meta[section], target)
            setattr(doc, section, target or None)
            setattr(doc, "meta_" + section, meta or None)
    size = doc.size()
    if size > max_size:
        raise InvalidInputError(
            f"the shadow document would be {size} bytes (desired + reported), over the limit of {max_size} bytes; "
            "the payload exceeds the maximum size allowed", code="SHADOW_DOCUMENT_TOO_LARGE")
    doc.version = (current.version if current is not None else 0) + 1
    accepted: dict[str, Any] = {"state": request.raw_state, "metadata": patch_meta, "version": doc.version,
                                "timestamp": now}
    documents: dict[str, Any] = {"previous": current.to_json() if current is not None else None,
                                 "current": doc.to_json(), "timestamp": now}
    delta_msg: dict[str, Any] | None = None
    d = delta(doc.desired, doc.reported)
    if d:
        delta_msg = {"version": doc.version, "timestamp": now, "state": d,
                     "metadata": _delta_meta(d, doc.meta_desired)}
    if request.client_token is not None:
        for msg in (accepted, documents, delta_msg):
            if msg is not None:
                msg["clientToken"] = request.client_token
    return UpdateResult(doc, accepted, documents, delta_msg)


def rejected(err: BaseException, now: int, client_token: str | None = None) -> dict[str, Any]:
    """The ``/rejected`` message for an error (``code`` is the HTTP-like status, as AWS IoT sends)."""
    message = err.message if isinstance(err, RoostError) else "Internal service failure"
    out: dict[str, Any] = {"code": http_status(err), "message": message, "timestamp": now}
    if client_token is not None:
        out["clientToken"] = client_token
    return out


def not_found(thing: str, shadow: str) -> NotFoundError:
    return NotFoundError(f"no shadow exists: {describe(thing, shadow)}", code="SHADOW_NOT_FOUND")
