"""Local shadows: the document semantics (merge, delta, versions, metadata, limits) as pure
functions, the store across reopen, and bad input for each rule."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.agent import shadows
from roost.agent.shadow_store import LocalShadows, ShadowStore
from roost.agent.shadows import ShadowDocument, apply_update, delta, merge, parse_update
from roost.errors import ConflictError, InvalidInputError, NotFoundError

NOW = 1_700_000_000


def _update(current: ShadowDocument | None, doc: dict[str, Any], **kw: Any) -> shadows.UpdateResult:
    return apply_update(current, parse_update(json.dumps(doc).encode()), NOW, **kw)


def test_first_update_creates_version_1_with_metadata_per_leaf() -> None:
    result = _update(None, {"state": {"desired": {"color": "red", "light": {"on": True, "levels": [1, 2]}}},
                            "clientToken": "tok-1"})
    doc = result.document
    assert doc.version == 1
    assert doc.desired == {"color": "red", "light": {"on": True, "levels": [1, 2]}}
    assert doc.meta_desired == {"color": {"timestamp": NOW},
                                "light": {"on": {"timestamp": NOW}, "levels": [{"timestamp": NOW}] * 2}}
    assert result.accepted == {"state": {"desired": {"color": "red", "light": {"on": True, "levels": [1, 2]}}},
                               "metadata": {"desired": doc.meta_desired}, "version": 1, "timestamp": NOW,
                               "clientToken": "tok-1"}
    # Nothing reported yet: the whole desired state is the delta.
    assert result.delta is not None and result.delta["state"] == doc.desired
    assert result.delta["clientToken"] == "tok-1" and result.delta["version"] == 1
    assert result.documents["previous"] is None and result.documents["current"]["version"] == 1


def test_merge_null_deletes_and_versions_increment() -> None:
    doc = _update(None, {"state": {"reported": {"a": 1, "b": {"c": 2, "d": 3}}}}).document
    second = _update(doc, {"state": {"reported": {"a": None, "b": {"c": None}, "e": [1]}}})
    assert second.document.reported == {"b": {"d": 3}, "e": [1]}
    assert second.document.meta_reported == {"b": {"d": {"timestamp": NOW}}, "e": [{"timestamp": NOW}]}
    assert second.document.version == 2
    assert second.documents["previous"]["state"] == {"reported": {"a": 1, "b": {"c": 2, "d": 3}}}
    # Deleting the last key of an object removes the object; an empty object deletes like null.
    third = _update(second.document, {"state": {"reported": {"b": {"d": None}, "e": {}}}})
    assert third.document.reported is None and third.document.meta_reported is None
    assert third.document.version == 3


def test_state_null_clears_both_sections() -> None:
    doc = _update(None, {"state": {"desired": {"x": 1}, "reported": {"x": 2}}}).document
    cleared = _update(doc, {"state": None}).document
    assert cleared.desired is None and cleared.reported is None and cleared.version == 2
    assert cleared.get_response(NOW)["state"] == {}


def test_delta_only_holds_what_reported_does_not_match() -> None:
    doc = _update(None, {"state": {"desired": {"t": 20, "mode": "auto", "fan": {"speed": 2, "on": True}},
                                   "reported": {"t": 20.0, "mode": "off", "fan": {"speed": 2, "on": 1}}}}).document
    # 20 == 20.0 (numbers by value), true != 1 (booleans only equal booleans).
    assert delta(doc.desired, doc.reported) == {"mode": "auto", "fan": {"on": True}}
    got = doc.get_response(NOW)
    assert got["state"]["delta"] == {"mode": "auto", "fan": {"on": True}}
    assert got["version"] == 1 and got["metadata"]["reported"]["t"] == {"timestamp": NOW}
    synced = _update(doc, {"state": {"reported": {"mode": "auto", "fan": {"on": True}}}})
    assert synced.delta is None and "delta" not in synced.document.get_response(NOW)["state"]


def test_version_must_match_the_current_one() -> None:
    doc = _update(None, {"state": {"desired": {"x": 1}}}).document
    assert _update(doc, {"state": {"desired": {"x": 2}}, "version": 1}).document.version == 2
    with pytest.raises(ConflictError) as err:
        _update(doc, {"state": {"desired": {"x": 2}}, "version": 5})
    assert err.value.code == "SHADOW_VERSION_CONFLICT" and shadows.http_status(err.value) == 409
    assert "names version 5, the shadow is at version 1" in err.value.message
    with pytest.raises(InvalidInputError) as new:
        _update(None, {"state": {"desired": {"x": 2}}, "version": 3})
    assert new.value.code == "SHADOW_INVALID_VERSION"
    assert _update(None, {"state": {"desired": {"x": 2}}, "version": 1}).document.version == 1


def _nested(levels: int) -> dict[str, Any]:
    node: Any = 1
    for i in range(levels):
        node = {f"l{i}": node}
    return node  # type: ignore[no-any-return]


def test_depth_limit_is_six_levels() -> None:
    # desired itself is level 1: six levels of objects (it and five below) are allowed, seven are not.
    assert _update(None, {"state": {"desired": _nested(6)}}).document.version == 1
    with pytest.raises(InvalidInputError) as err:
        _update(None, {"state": {"reported": _nested(7)}})
    assert err.value.code == "SHADOW_DEPTH_EXCEEDED" and "maximum is 6" in err.value.message
    assert "state.reported" in err.value.message


def test_document_size_limit_names_size_and_limit() -> None:
    doc = _update(None, {"state": {"desired": {"a": "x" * 4000}}}).document
    with pytest.raises(InvalidInputError) as err:
        _update(doc, {"state": {"reported": {"b": "y" * 4500}}})
    assert err.value.code == "SHADOW_DOCUMENT_TOO_LARGE" and shadows.http_status(err.value) == 413
    assert "over the limit of 8192 bytes" in err.value.message
    assert _update(doc, {"state": {"reported": {"b": "y" * 4500}}}, max_size=30 * 1024).document.version == 2


@pytest.mark.parametrize(("payload", "code", "words"), [
    (b"", "SHADOW_INVALID_DOCUMENT", "payload is missing"),
    (b"{not json", "SHADOW_INVALID_DOCUMENT", "not valid JSON"),
    (b'{"state": NaN}', "SHADOW_INVALID_DOCUMENT", "NaN is not a JSON number"),
    (b"[1, 2]", "SHADOW_INVALID_DOCUMENT", "non-empty JSON object"),
    (b'{"version": 1}', "SHADOW_INVALID_DOCUMENT", "no state member"),
    (b'{"state": 5}', "SHADOW_INVALID_DOCUMENT", "state must be an object or null"),
    (b'{"state": {"desired": [1]}}', "SHADOW_INVALID_DOCUMENT", "state.desired must be an object"),
    (b'{"state": {"wanted": {}}}', "SHADOW_INVALID_DOCUMENT", "not wanted"),
    (b'{"state": {}, "version": -1}', "SHADOW_INVALID_VERSION", "non-negative integer"),
    (b'{"state": {}, "version": 1.5}', "SHADOW_INVALID_VERSION", "non-negative integer"),
    (b'{"state": {}, "version": true}', "SHADOW_INVALID_VERSION", "non-negative integer"),
    (b'{"state": {}, "clientToken": 7}', "SHADOW_INVALID_CLIENT_TOKEN", "at most 64"),
    (b'{"state": {}, "clientToken": "' + b"t" * 65 + b'"}', "SHADOW_INVALID_CLIENT_TOKEN", "at most 64"),
    (b"\xff\xfe", "SHADOW_INVALID_DOCUMENT", "not UTF-8"),
])
def test_bad_update_documents(payload: bytes, code: str, words: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_update(payload)
    assert err.value.code == code and words in err.value.message, err.value.message


def test_delta_in_an_update_is_ignored() -> None:
    request = parse_update(b'{"state": {"desired": {"a": 1}, "delta": {"a": 2}}}')
    assert request.state == {"desired": {"a": 1}}


@pytest.mark.parametrize(("thing", "shadow", "words"), [
    (None, "", "thingName is required"),
    ("", "", "thingName is required"),
    ("a/b", "", "must match the pattern"),
    ("t" * 129, "", "maximum length of 128"),
    (5, "", "must be a string"),
    ("ok", "bad name", "must match the pattern"),
    ("ok", "s" * 65, "maximum length of 64"),
    ("ok", ["x"], "must be a string"),
])
def test_bad_names(thing: Any, shadow: Any, words: str) -> None:
    def check() -> None:
        shadows.validate_thing_name(thing)
        shadows.validate_shadow_name(shadow)

    with pytest.raises(InvalidInputError) as err:
        check()
    assert err.value.code == "SHADOW_INVALID_NAME" and words in err.value.message


def test_topics_for_classic_and_named_shadows() -> None:
    assert shadows.validate_shadow_name(None) == "" == shadows.validate_shadow_name("")
    assert shadows.topic_prefix("dev-1", "") == "$aws/things/dev-1/shadow"
    assert shadows.topic_prefix("dev-1", "cfg") == "$aws/things/dev-1/shadow/name/cfg"


_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("ab", max_size=2))
_json_obj = st.recursive(st.dictionaries(st.sampled_from("abc"), _json_leaf, max_size=3),
                         lambda children: st.dictionaries(st.sampled_from("abc"), children | _json_leaf, max_size=3),
                         max_leaves=8)


def _clean(value: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        if isinstance(v, dict):
            v = _clean(v)
        if v is not None and v != {}:
            out[k] = v
    return out


@settings(max_examples=200, deadline=None)
@given(_json_obj, _json_obj)
def test_merge_properties(base: dict[str, Any], patch: dict[str, Any]) -> None:
    target = _clean(base)
    merge(target, patch)
    # No null or empty object is ever stored; every non-null leaf of the patch is there afterwards.
    assert target == _clean(target)

    def leaves(d: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
        out: list[tuple[tuple[str, ...], Any]] = []
        for k, v in d.items():
            out += leaves(v, (*path, k)) if isinstance(v, dict) else [((*path, k), v)]
        return out

    for path, value in leaves(_clean(patch)):
        node: Any = target
        for key in path:
            node = node[key]
        assert node == value
    # A second merge of the same patch changes nothing (idempotent).
    again = json.loads(json.dumps(target))
    merge(again, patch)
    assert again == target


@settings(max_examples=200, deadline=None)
@given(_json_obj, _json_obj)
def test_delta_is_empty_exactly_when_reported_covers_desired(desired: dict[str, Any],
                                                              reported: dict[str, Any]) -> None:
    want, have = _clean(desired), _clean(reported)
    d = delta(want or None, have or None)
    merged = json.loads(json.dumps(have))
    merge(merged, want)
    # Compared as JSON text: Python's == would take false for 0 (JSON does not; neither does delta).
    assert (d is None) == (json.dumps(merged, sort_keys=True) == json.dumps(have, sort_keys=True))
    if d is not None:  # applying the delta to reported brings it in sync
        merge(have, d)
        assert delta(want or None, have) is None


# -- the store and the service -------------------------------------------------------------------


def test_store_is_private_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shadows.db"
    service = LocalShadows(ShadowStore(path))
    service.update("dev", "", b'{"state": {"reported": {"t": 1}}}')
    out = service.update("dev", "cfg", b'{"state": {"desired": {"mode": "eco"}}, "clientToken": "c"}')
    topics = [t for t, _ in out.publish]
    prefix = "$aws/things/dev/shadow/name/cfg/update"
    assert topics == [f"{prefix}/delta", f"{prefix}/documents", f"{prefix}/accepted"]
    service.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = LocalShadows(ShadowStore(path))
    got = again.get("dev", "cfg").response
    assert got is not None and got["state"] == {"desired": {"mode": "eco"}, "delta": {"mode": "eco"}}
    assert again.get("dev", "").response["version"] == 1  # type: ignore[index]
    deleted = again.delete("dev", "cfg")
    assert deleted.response is None
    assert deleted.publish[0][0] == "$aws/things/dev/shadow/name/cfg/delete/accepted"
    assert deleted.publish[0][1]["version"] == 1
    with pytest.raises(NotFoundError) as err:
        again.get("dev", "cfg")
    assert err.value.code == "SHADOW_NOT_FOUND" and "shadow cfg of dev" in err.value.message
    with pytest.raises(NotFoundError):
        again.delete("dev", "cfg")
    # As ShadowManager does locally, a deleted shadow starts again at version 1.
    assert again.update("dev", "cfg", b'{"state": {"desired": {}}}').response["version"] == 1  # type: ignore[index]
    again.close()


def test_list_named_pages_with_tokens(tmp_path: Path) -> None:
    service = LocalShadows(ShadowStore(tmp_path / "s.db"))
    for name in ("c", "a", "b", "d", "e"):
        service.update("dev", name, b'{"state": {"reported": {"x": 1}}}')
    service.update("dev", "", b'{"state": {"reported": {"x": 1}}}')  # the classic shadow is not listed
    service.update("other", "z", b'{"state": {"reported": {"x": 1}}}')
    first = service.list_named("comp", "dev", 2, None)
    assert first["results"] == ["a", "b"] and "nextToken" in first
    second = service.list_named("comp", "dev", 2, first["nextToken"])
    assert second["results"] == ["c", "d"]
    third = service.list_named("comp", "dev", 2, second["nextToken"])
    assert third["results"] == ["e"] and "nextToken" not in third
    assert service.list_named("comp", "dev", None, "")["results"] == ["a", "b", "c", "d", "e"]
    for bad in (0, 101, "5", True):
        with pytest.raises(InvalidInputError) as err:
            service.list_named("comp", "dev", bad, None)
        assert err.value.code == "SHADOW_INVALID_PAGE_SIZE"
    for token, who, thing in (("garbage!", "comp", "dev"), (first["nextToken"], "intruder", "dev"),
                              (first["nextToken"], "comp", "other"), (first["nextToken"][:-4] + "AAAA", "comp", "dev")):
        with pytest.raises(InvalidInputError) as err:
            service.list_named(who, thing, 2, token)
        assert err.value.code == "SHADOW_INVALID_NEXT_TOKEN"


def test_shadow_count_is_bounded(tmp_path: Path) -> None:
    service = LocalShadows(ShadowStore(tmp_path / "s.db"), max_shadows=2)
    service.update("dev", "a", b'{"state": {"reported": {"x": 1}}}')
    service.update("dev", "b", b'{"state": {"reported": {"x": 1}}}')
    service.update("dev", "a", b'{"state": {"reported": {"x": 2}}}')  # an existing one may still change
    with pytest.raises(ConflictError) as err:
        service.update("dev", "c", b'{"state": {"reported": {"x": 1}}}')
    assert err.value.code == "SHADOW_LIMIT" and "at most 2 shadows" in err.value.message
    with pytest.raises(InvalidInputError):
        LocalShadows(ShadowStore(tmp_path / "t.db"), max_document_size=31 * 1024)


def test_rejected_message_shape() -> None:
    err = ConflictError("version conflict", code="SHADOW_VERSION_CONFLICT")
    assert shadows.rejected(err, NOW, "tok") == {"code": 409, "message": "version conflict", "timestamp": NOW,
                                                 "clientToken": "tok"}
    assert shadows.client_token_of(b'{"clientToken": "abc", "state": 1}') == "abc"
    assert shadows.client_token_of(b"nope") is None
