"""The agent's local publish/subscribe broker (Greengrass local pub/sub semantics).

Topic filters follow MQTT: levels are separated by ``/``, ``+`` matches exactly one level,
``#`` (last level only) matches the parent level and any number of levels below it. Exact
filters are indexed in a dict so publishing to a topic nobody watches with a wildcard is O(1);
wildcard filters are kept in a list and matched level by level.

Delivery is synchronous: :meth:`PubSub.publish` calls every matching subscriber's ``deliver``
before it returns, so each subscriber sees messages in publish order. ``deliver`` must not
block (the IPC server's deliver writes one frame to a socket buffer).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from roost.errors import InvalidInputError

logger = logging.getLogger(__name__)

RECEIVE_ALL_MESSAGES: Final = "RECEIVE_ALL_MESSAGES"
RECEIVE_MESSAGES_FROM_OTHERS: Final = "RECEIVE_MESSAGES_FROM_OTHERS"

#: ``deliver(topic, message, publisher)``; ``message`` is ``bytes`` (binary) or a JSON value.
Deliver = Callable[[str, Any, str], None]


def validate_topic_filter(topic_filter: object) -> str:
    """Return ``topic_filter`` if it is a valid MQTT filter, else raise InvalidInputError."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise InvalidInputError(f"topic filter {topic_filter!r} must be a non-empty string")
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != last):
            raise InvalidInputError(f"topic filter {topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise InvalidInputError(f"topic filter {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is a valid topic to publish to (no wildcards), else raise."""
    if not isinstance(topic, str) or not topic:
        raise InvalidInputError(f"topic {topic!r} must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise InvalidInputError(f"topic {topic!r}: wildcards '+' and '#' are not allowed when publishing")
    return topic


def has_wildcards(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def _levels_match(flevels: list[str], tlevels: list[str]) -> bool:
    nt = len(tlevels)
    for i, f in enumerate(flevels):
        if f == "#":
            return True
        if i >= nt:
            return False
        if f != "+" and f != tlevels[i]:
            return False
    return len(flevels) == nt


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of ``topic`` against ``topic_filter`` (``+`` one level, ``#`` the rest)."""
    if topic_filter == topic:
        return True
    if not has_wildcards(topic_filter):
        return False
    return _levels_match(topic_filter.split("/"), topic.split("/"))


class SubscriptionHandle:
    """One subscription; pass it to :meth:`PubSub.unsubscribe`."""

    __slots__ = (
        "_failed",
        "active",
        "deliver",
        "levels",
        "others_only",
        "principal",
        "receive_mode",
        "topic_filter",
    )

    def __init__(self, topic_filter: str, principal: str, deliver: Deliver, receive_mode: str) -> None:
        self.topic_filter = topic_filter
        self.principal = principal
        self.deliver = deliver
        self.receive_mode = receive_mode
        self.others_only = receive_mode == RECEIVE_MESSAGES_FROM_OTHERS
        self.levels = topic_filter.split("/") if has_wildcards(topic_filter) else None
        self.active = True
        self._failed = False

    def __repr__(self) -> str:
        return f"<Subscription {self.topic_filter!r} by {self.principal}>"


class PubSub:
    """The broker. Not thread-safe: use it from the agent's event loop thread."""

    def __init__(self) -> None:
        self._exact: dict[str, tuple[SubscriptionHandle, ...]] = {}
        self._wild: tuple[SubscriptionHandle, ...] = ()
        #: called with the topic filter after every subscribe and unsubscribe
        self._listeners: tuple[Callable[[str], None], ...] = ()

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(topic_filter)`` after each subscription is added or removed."""
        self._listeners = (*self._listeners, listener)

    def _changed(self, topic_filter: str) -> None:
        for listener in self._listeners:
            try:
                listener(topic_filter)
            except Exception:
                logger.exception("a pub/sub subscription listener failed")

    def subscribers(self, topic: str) -> list[SubscriptionHandle]:
        """The active subscriptions that match ``topic`` (exact and wildcard)."""
        found = [h for h in self._exact.get(topic, ()) if h.active]
        if self._wild:
            tlevels = topic.split("/")
            found += [h for h in self._wild if h.active and _levels_match(h.levels, tlevels)]  # type: ignore[arg-type]
        return found

    @property
    def subscription_count(self) -> int:
        return sum(len(v) for v in self._exact.values()) + len(self._wild)

    def subscribe(
        self,
        topic_filter: str,
        principal: str,
        deliver: Deliver,
        receive_mode: str = RECEIVE_ALL_MESSAGES,
    ) -> SubscriptionHandle:
        validate_topic_filter(topic_filter)
        if receive_mode not in (RECEIVE_ALL_MESSAGES, RECEIVE_MESSAGES_FROM_OTHERS):
            raise InvalidInputError(
                f"receiveMode {receive_mode!r} is not one of {RECEIVE_ALL_MESSAGES}, {RECEIVE_MESSAGES_FROM_OTHERS}"
            )
        handle = SubscriptionHandle(topic_filter, principal, deliver, receive_mode)
        if handle.levels is None:
            self._exact[topic_filter] = (*self._exact.get(topic_filter, ()), handle)
        else:
            self._wild = (*self._wild, handle)
        if self._listeners:
            self._changed(topic_filter)
        return handle

    def unsubscribe(self, handle: SubscriptionHandle) -> None:
        """Remove a subscription (idempotent)."""
        if not handle.active:
            return
        handle.active = False
        if handle.levels is None:
            subs = tuple(h for h in self._exact.get(handle.topic_filter, ()) if h is not handle)
            if subs:
                self._exact[handle.topic_filter] = subs
            else:
                self._exact.pop(handle.topic_filter, None)
        else:
            self._wild = tuple(h for h in self._wild if h is not handle)
        if self._listeners:
            self._changed(handle.topic_filter)

    def publish(self, topic: str, message: Any, publisher: str) -> int:
        """Deliver ``message`` to every matching subscriber; return how many received it."""
        count = 0
        exact = self._exact.get(topic)
        if exact:
            for handle in exact:
                if handle.others_only and handle.principal == publisher:
                    continue
                count += self._deliver(handle, topic, message, publisher)
        wild = self._wild
        if wild:
            tlevels = topic.split("/")
            for handle in wild:
                if handle.others_only and handle.principal == publisher:
                    continue
                if _levels_match(handle.levels, tlevels):  # type: ignore[arg-type]
                    count += self._deliver(handle, topic, message, publisher)
        return count

    @staticmethod
    def _deliver(handle: SubscriptionHandle, topic: str, message: Any, publisher: str) -> int:
        if not handle.active:
            return 0
        try:
            handle.deliver(topic, message, publisher)
        except Exception:
            if not handle._failed:
                handle._failed = True
                logger.exception("pub/sub delivery to %r failed (logged once per subscription)", handle)
            return 0
        return 1
