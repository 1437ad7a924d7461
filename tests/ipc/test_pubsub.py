"""Topic matching and the pub/sub broker."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.agent.pubsub import (
    RECEIVE_MESSAGES_FROM_OTHERS,
    PubSub,
    topic_matches,
    validate_topic,
    validate_topic_filter,
)
from roost.errors import InvalidInputError

level = st.text(st.characters(blacklist_characters="/+#", blacklist_categories=("Cs",)), max_size=6)
topics = st.lists(level, min_size=1, max_size=6).map("/".join).filter(bool)


@given(topics, topics)
def test_a_filter_without_wildcards_matches_only_itself(f: str, t: str) -> None:
    assert topic_matches(f, t) == (f == t)


@given(topics)
def test_hash_matches_everything(t: str) -> None:
    assert topic_matches("#", t)


@given(st.lists(level, min_size=1, max_size=6))
def test_plus_matches_exactly_one_level(levels: list[str]) -> None:
    t = "/".join(levels)
    for i in range(len(levels)):
        f = "/".join([*levels[:i], "+", *levels[i + 1 :]])
        assert topic_matches(f, t)
        assert not topic_matches(f + "/x", t)
    assert topic_matches("/".join(["+"] * len(levels)), t)
    assert not topic_matches("/".join(["+"] * (len(levels) + 1)), t)


@given(st.lists(level, min_size=1, max_size=6), st.integers(0, 6))
def test_trailing_hash_matches_the_prefix_and_below(levels: list[str], cut: int) -> None:
    t = "/".join(levels)
    prefix = levels[: min(cut, len(levels))]
    assert topic_matches("/".join([*prefix, "#"]), t)


@pytest.mark.parametrize(
    ("f", "t", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "ab", False),
        ("+", "/", False),
        ("+/+", "/", True),
        ("a/+", "a/b/c", False),
    ],
)
def test_topic_matches_examples(f: str, t: str, expected: bool) -> None:
    assert topic_matches(f, t) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "+a/b", None, 3])
def test_invalid_filters_are_rejected_naming_the_topic(bad: Any) -> None:
    with pytest.raises(InvalidInputError) as err:
        validate_topic_filter(bad)
    assert repr(bad) in err.value.message


def test_publish_topics_must_not_contain_wildcards() -> None:
    for bad in ("a/+", "#", ""):
        with pytest.raises(InvalidInputError):
            validate_topic(bad)
    assert validate_topic("a/b") == "a/b"


def test_broker_routes_exact_and_wildcard_and_receive_modes() -> None:
    broker = PubSub()
    got: list[tuple[str, str, Any]] = []

    def sink(name: str):  # type: ignore[no-untyped-def]
        return lambda topic, message, publisher: got.append((name, topic, message))

    broker.subscribe("a/b", "X", sink("exact"))
    h_wild = broker.subscribe("a/+", "X", sink("wild"))
    broker.subscribe("#", "Y", sink("all"), RECEIVE_MESSAGES_FROM_OTHERS)
    assert broker.publish("a/b", 1, "Y") == 2
    assert broker.publish("a/b", 2, "X") == 3
    assert broker.publish("z", 3, "X") == 1
    assert got == [
        ("exact", "a/b", 1),
        ("wild", "a/b", 1),
        ("exact", "a/b", 2),
        ("wild", "a/b", 2),
        ("all", "a/b", 2),
        ("all", "z", 3),
    ]
    broker.unsubscribe(h_wild)
    broker.unsubscribe(h_wild)
    assert broker.subscription_count == 2
    got.clear()
    broker.publish("a/b", 4, "Z")
    assert [name for name, _, _ in got] == ["exact", "all"]


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broker = PubSub()
    got: list[int] = []

    def bad(topic: str, message: Any, publisher: str) -> None:
        raise RuntimeError("boom")

    broker.subscribe("t", "A", bad)
    broker.subscribe("t", "B", lambda t, m, p: got.append(m))
    for i in range(3):
        broker.publish("t", i, "C")
    assert got == [0, 1, 2]
    assert caplog.text.count("failed") == 1


def test_unsubscribing_during_delivery_is_safe() -> None:
    broker = PubSub()
    got: list[str] = []
    handles = []

    def first(topic: str, message: Any, publisher: str) -> None:
        got.append("first")
        broker.unsubscribe(handles[1])

    handles.append(broker.subscribe("t", "A", first))
    handles.append(broker.subscribe("t", "B", lambda t, m, p: got.append("second")))
    broker.publish("t", 0, "C")
    broker.publish("t", 0, "C")
    assert got == ["first", "first"]
