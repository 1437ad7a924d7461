"""When devices were last seen, written in batches.

Every authenticated device request counts as "seen". Writing ``last_seen_at`` per request would be
one more transaction per request; :class:`Presence` instead remembers the newest time per device
and writes them all every ``interval`` seconds in one statement (never moving a time backwards, as
another hub process may have seen the device later). A device counts as ONLINE for two minutes
after it was last seen, so a few seconds of delay change nothing a person sees.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import anyio.to_thread

from roost.hub.background import BackgroundLoop
from roost.hub.store import SEEN_THROTTLE, Store

logger = logging.getLogger(__name__)


class Presence:
    def __init__(self, store: Store, interval: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self._pending: dict[int, datetime] = {}
        #: The last time written (or queued) per device: at most one write per SEEN_THROTTLE.
        self._written: dict[int, datetime] = {}
        self._loop = BackgroundLoop(self._run)

    def seen(self, device_id: int) -> None:
        now = self.store.clock()
        last = self._written.get(device_id)
        if last is None or now - last >= SEEN_THROTTLE:
            self._written[device_id] = now
            self._pending[device_id] = now
            self._loop.ensure_started()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await anyio.to_thread.run_sync(self.store.touch_devices, pending)
        except Exception as err:  # the database is away: keep the times for the next round
            logger.warning("cannot record when %d devices were last seen: %s", len(pending), err)
            for device_id, when in pending.items():
                self._pending.setdefault(device_id, when)

    async def stop(self) -> None:
        await self._loop.stop()
        await self.flush()
