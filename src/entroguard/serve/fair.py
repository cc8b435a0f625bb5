"""Fair sharing of the model between clients: per-client queues served round-robin.

The tail runs ``slots`` pieces of work at a time (the model threads). When all are busy, each
client waits in its own queue, and a freed slot goes to the next client in turn, not to the
oldest waiter: a client with 64 requests queued and a client with one each get every other
slot. Requests are cut into units of at most ``chunk_packets`` packets (see
:class:`~entroguard.serve.service.Service`), so a 64-packet batch cannot hold the model for
longer than one unit while another client waits. How many requests one client may have
waiting is bounded by :class:`~entroguard.serve.service.Service` (``max_in_flight_per_client``).

All methods run on the event loop thread; only the work itself runs in worker threads.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


class FairScheduler:
    """Run blocking work for clients, ``slots`` at a time, round-robin between clients.

    Args:
        slots: pieces of work running at once (worker threads).
    """

    def __init__(self, slots: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = int(slots)
        self.busy = 0
        self._queues: OrderedDict[str, deque[asyncio.Future]] = OrderedDict()
        self._limiter: anyio.CapacityLimiter | None = None

    def waiting(self, client: str | None = None) -> int:
        """Units waiting (of ``client``, or of everyone)."""
        if client is not None:
            return len(self._queues.get(client, ()))
        return sum(len(q) for q in self._queues.values())

    async def run(self, client: str, work: Callable[..., T], *args) -> T:
        """``work(*args)`` in a worker thread once ``client``'s turn comes."""
        await self._acquire(client)
        try:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(self.slots)
            return await anyio.to_thread.run_sync(work, *args, limiter=self._limiter)
        finally:
            self._release()

    async def _acquire(self, client: str) -> None:
        if self.busy < self.slots and not self._queues:
            self.busy += 1
            return
        queue = self._queues.get(client)
        if queue is None:
            queue = self._queues[client] = deque()
        turn = asyncio.get_running_loop().create_future()
        queue.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # the slot was handed over as the caller went away
            else:
                self._forget(client, turn)
            raise

    def _forget(self, client: str, turn: asyncio.Future) -> None:
        queue = self._queues.get(client)
        if queue is not None and turn in queue:
            queue.remove(turn)
            if not queue:
                del self._queues[client]

    def _release(self) -> None:
        self.busy -= 1
        while self.busy < self.slots and self._queues:
            client, queue = next(iter(self._queues.items()))
            turn = queue.popleft()
            if queue:
                self._queues.move_to_end(client)  # its next unit waits for everyone else's
            else:
                del self._queues[client]
            if not turn.done():
                self.busy += 1
                turn.set_result(None)
