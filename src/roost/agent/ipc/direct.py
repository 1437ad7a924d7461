"""Direct request/reply channels (a Roost extension to Greengrass IPC).

A local request/reply through the agent crosses four socket hops and three Python processes
(requester → agent → responder → agent → requester). When one Roost client answers requests on a
topic and another asks, the agent can authorise the pair once and let the two talk over a Unix
socket of their own: two hops, no agent in the path. What stays the agent's:

* **Who may talk.** A responder *offers* a channel for a topic it is subscribed to
  (``roost#OfferDirectChannel``, a stream), naming an abstract Unix socket it listens on. A
  requester *opens* one (``roost#OpenDirectChannel``, a stream) for a topic and its reply topic.
  The agent grants it only when every check the two publishes would pass holds: the requester may
  publish to the topic and subscribe to its reply topic, the responder may subscribe to the topic
  and publish to the reply topic (``aws.greengrass.ipc.pubsub`` policies, as for pub/sub).
* **Pub/sub semantics.** A channel is granted only while the responder's subscription is the *only*
  subscription matching the topic and the requester's reply subscription the only one matching the
  reply topic: a message sent over the channel reaches exactly whom the agent would have delivered
  it to. Another component subscribing to either topic later revokes the channel.
* **Revocation.** A changed policy (a deployment; :meth:`DirectChannels.recheck`), a subscription
  ending, either connection closing, or either stream closing revokes the channel: both ends get
  a ``revoked`` event on their stream; the Roost client stops sending on it at once and closes it
  after a short grace for replies in flight. A component that is stopped loses its connection, so
  its channels end with it.
* **Secrets.** The agent hands both ends a fresh 256-bit token per channel; the responder accepts a
  connection on its socket only with a token the agent gave it (compared in constant time).

Bounds: one offer per (connection, topic); :data:`MAX_CHANNELS_PER_OFFER` channels per offer; every
offer and channel is also an IPC stream, so the per-component stream cap applies.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from roost.agent import authz
from roost.agent.errors import DirectChannelUnavailableError
from roost.agent.pubsub import PubSub, SubscriptionHandle, topic_matches, validate_topic
from roost.errors import InvalidInputError
from roost.ipc import rpc

logger = logging.getLogger(__name__)

MAX_CHANNELS_PER_OFFER: Final = 64
#: The only addresses an offer may name: abstract-namespace Unix sockets of Roost clients
#: (``@`` stands for the leading NUL), so the agent never points a requester at a file.
ADDRESS_RE: Final = re.compile(r"@roost-direct-[0-9a-f]{16,64}")

_PUBLISH: Final = rpc.OP_PUBLISH_TO_TOPIC
_SUBSCRIBE: Final = rpc.OP_SUBSCRIBE_TO_TOPIC


class Endpoint(Protocol):
    """One end's IPC connection, as far as the registry uses it."""

    @property
    def closing(self) -> bool: ...

    def write(self, data: bytes) -> None: ...


class Policies(Protocol):
    """The agent's policy lookups (a subset of :class:`~roost.agent.ipc_core.IpcCore`)."""

    def access_control(self, principal: str) -> Mapping[str, Any]: ...

    def is_privileged(self, principal: str) -> bool: ...


@dataclass(eq=False)
class _Offer:
    conn: Endpoint
    sid: int
    principal: str
    topic: str
    address: str
    handle: SubscriptionHandle
    channels: dict[int, _Channel] = field(default_factory=dict)


@dataclass(eq=False)
class _Channel:
    cid: int
    offer: _Offer
    conn: Endpoint
    sid: int
    principal: str
    reply_topic: str
    reply_handle: SubscriptionHandle


def _event(sid: int, body: dict[str, Any]) -> bytes:
    return rpc.application_message(sid, rpc.DIRECT_CHANNEL_EVENT, rpc.dumps({"channelEvent": body}))


class DirectChannels:
    """The agent's registry of direct-channel offers and granted channels (event-loop thread only)."""

    def __init__(self, pubsub: PubSub, policies: Policies) -> None:
        self._pubsub = pubsub
        self._policies = policies
        self._offers: dict[str, list[_Offer]] = {}
        self._channels: dict[int, _Channel] = {}
        self._next_cid = 0
        pubsub.add_listener(self._subscriptions_changed)

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    def _allowed(self, principal: str, operation: str, topic: str) -> bool:
        if self._policies.is_privileged(principal):
            return True
        return authz.authorize(self._policies.access_control(principal), authz.PUBSUB_SERVICE, operation, topic)

    # -- offers (responders) -----------------------------------------------------------------

    def offer(self, conn: Endpoint, sid: int, principal: str, topic: str, address: str) -> Callable[[], None]:
        """Record an offer; returns the function that withdraws it (the stream's end)."""
        validate_topic(topic)
        if not isinstance(address, str) or ADDRESS_RE.fullmatch(address) is None:
            raise InvalidInputError(
                f"address must be an abstract socket name matching {ADDRESS_RE.pattern}, got {address!r}"
            )
        handle = next((h for h in self._pubsub.subscribers(topic)
                       if h.principal == principal and h.topic_filter == topic), None)
        if handle is None:
            raise InvalidInputError(f"{principal} offers a direct channel for {topic!r} without a subscription to it")
        for existing in self._offers.get(topic, ()):
            if existing.conn is conn:
                raise InvalidInputError(f"this connection already offers a direct channel for {topic!r}")
        offer = _Offer(conn, sid, principal, topic, address, handle)
        self._offers.setdefault(topic, []).append(offer)
        return lambda: self._withdraw(offer, "the responder withdrew its offer")

    def _withdraw(self, offer: _Offer, reason: str) -> None:
        offers = self._offers.get(offer.topic)
        if offers is not None and offer in offers:
            offers.remove(offer)
            if not offers:
                del self._offers[offer.topic]
        for channel in list(offer.channels.values()):
            self._revoke(channel, reason)

    # -- channels (requesters) ---------------------------------------------------------------

    def open(self, conn: Endpoint, sid: int, principal: str, topic: str,
             reply_topic: str) -> tuple[dict[str, Any], Callable[[], None]]:
        """Grant a channel: (the requester's answer, the function that ends it)."""
        validate_topic(topic)
        validate_topic(reply_topic)
        offer = self._grantable(principal, topic, reply_topic)
        if len(offer.channels) >= MAX_CHANNELS_PER_OFFER:
            raise DirectChannelUnavailableError(
                f"the responder for {topic!r} has {MAX_CHANNELS_PER_OFFER} direct channels open (its limit)")
        reply_handle = self._only_subscriber(reply_topic)
        assert reply_handle is not None  # _grantable checked it
        self._next_cid += 1
        channel = _Channel(self._next_cid, offer, conn, sid, principal, reply_topic, reply_handle)
        token = secrets.token_hex(32)
        offer.channels[channel.cid] = channel
        self._channels[channel.cid] = channel
        offer.conn.write(_event(offer.sid, {"type": "open", "channel": channel.cid, "token": token, "topic": topic,
                                            "replyTopic": reply_topic, "requester": principal}))
        logger.debug("direct channel %d: %s -> %s on %s", channel.cid, principal, offer.principal, topic)
        answer = {"channel": channel.cid, "address": offer.address, "token": token, "responder": offer.principal}
        return answer, lambda: self._revoke(channel, "the requester closed the channel")

    def _only_subscriber(self, topic: str) -> SubscriptionHandle | None:
        subs = self._pubsub.subscribers(topic)
        return subs[0] if len(subs) == 1 else None

    def _grantable(self, principal: str, topic: str, reply_topic: str) -> _Offer:
        """The offer a channel for (topic, reply_topic) may use, or raise saying why not."""
        if not self._allowed(principal, _PUBLISH, topic):
            raise DirectChannelUnavailableError(f"{principal} may not publish to {topic!r}")
        if not self._allowed(principal, _SUBSCRIBE, reply_topic):
            raise DirectChannelUnavailableError(f"{principal} may not subscribe to {reply_topic!r}")
        subs = self._pubsub.subscribers(topic)
        if len(subs) != 1:
            raise DirectChannelUnavailableError(
                f"{topic!r} has {len(subs)} subscriptions; a direct channel needs exactly one")
        offer = next((o for o in self._offers.get(topic, ()) if o.handle is subs[0] and not o.conn.closing), None)
        if offer is None:
            raise DirectChannelUnavailableError(f"the subscriber of {topic!r} offers no direct channel")
        if offer.principal == principal:
            raise DirectChannelUnavailableError(f"{principal} cannot open a direct channel to itself")
        reply = self._only_subscriber(reply_topic)
        if reply is None or reply.principal != principal:
            raise DirectChannelUnavailableError(
                f"the reply topic {reply_topic!r} must have exactly one subscription, the requester's own")
        if not self._allowed(offer.principal, _PUBLISH, reply_topic):
            raise DirectChannelUnavailableError(f"the responder {offer.principal} may not publish to {reply_topic!r}")
        if not self._allowed(offer.principal, _SUBSCRIBE, topic):
            raise DirectChannelUnavailableError(f"the responder {offer.principal} may not subscribe to {topic!r}")
        return offer

    def _still_valid(self, channel: _Channel) -> str | None:
        """Why ``channel`` may no longer be used, or None."""
        offer = channel.offer
        if not offer.handle.active:
            return "the responder's subscription ended"
        if not channel.reply_handle.active:
            return "the requester's reply subscription ended"
        try:
            granted = self._grantable(channel.principal, offer.topic, channel.reply_topic)
        except DirectChannelUnavailableError as err:
            return err.message
        if granted is not offer:
            return "the responder changed"
        return None

    def _revoke(self, channel: _Channel, reason: str) -> None:
        if self._channels.pop(channel.cid, None) is None:
            return
        channel.offer.channels.pop(channel.cid, None)
        body = {"type": "revoked", "channel": channel.cid, "reason": reason}
        for conn, sid in ((channel.conn, channel.sid), (channel.offer.conn, channel.offer.sid)):
            if not conn.closing:
                conn.write(_event(sid, body))
        logger.debug("direct channel %d revoked: %s", channel.cid, reason)

    # -- what revokes --------------------------------------------------------------------------

    def _subscriptions_changed(self, topic_filter: str) -> None:
        if not self._channels and not self._offers:
            return
        for offers in list(self._offers.values()):
            for offer in list(offers):
                if not offer.handle.active:
                    self._withdraw(offer, "the responder's subscription ended")
        for channel in list(self._channels.values()):
            if topic_matches(topic_filter, channel.offer.topic) or topic_matches(topic_filter, channel.reply_topic):
                reason = self._still_valid(channel)
                if reason is not None:
                    self._revoke(channel, reason)

    def recheck(self) -> int:
        """Re-run every channel's checks (policies changed); returns how many were revoked."""
        revoked = 0
        for channel in list(self._channels.values()):
            reason = self._still_valid(channel)
            if reason is not None:
                self._revoke(channel, reason)
                revoked += 1
        return revoked
