"""Fair sharing: round-robin turns between clients, packet budgets in debt, the tarpit."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from entroguard.serve.errors import ServeError
from entroguard.serve.fair import FairScheduler
from entroguard.serve.guard import ClientBudgets


def test_a_freed_slot_goes_to_the_next_client_not_the_oldest_waiter():
    order: list[str] = []
    gate = threading.Event()

    def work(name: str) -> str:
        if name == "first":
            gate.wait(10)
        order.append(name)
        return name

    async def main() -> list[str]:
        scheduler = FairScheduler(slots=1)
        first = asyncio.create_task(scheduler.run("flood", work, "first"))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(scheduler.run("flood", work, f"flood-{i}")) for i in range(4)]
        await asyncio.sleep(0.01)
        victim = asyncio.create_task(scheduler.run("victim", work, "victim"))
        await asyncio.sleep(0.01)
        assert scheduler.waiting("flood") == 4 and scheduler.waiting("victim") == 1
        gate.set()
        await asyncio.gather(first, victim, *queued)
        return order

    order = asyncio.run(main())
    # the flood's next unit, then the victim's (its turn comes round), then the rest
    assert order == ["first", "flood-0", "victim", "flood-1", "flood-2", "flood-3"]


def test_a_cancelled_waiter_leaves_no_hole():
    async def main() -> None:
        scheduler = FairScheduler(slots=1)
        gate = threading.Event()
        busy = asyncio.create_task(scheduler.run("a", gate.wait, 10))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(scheduler.run("b", time.sleep, 0))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await busy
        assert scheduler.busy == 0 and scheduler.waiting() == 0
        assert await scheduler.run("c", lambda: "ran") == "ran"

    asyncio.run(main())


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_packet_budgets_go_into_debt_and_make_the_client_wait_it_off():
    clock = Clock()
    budgets = ClientBudgets(rate=100.0, burst=128.0, clock=clock)
    assert budgets.wait_for("a", 0.0) == 0.0  # a new client starts with a full bucket
    budgets.charge("a", 128)
    budgets.charge("a", 64)  # admitted while at zero: 64 packets of debt
    assert budgets.wait_for("a", 0.0) == pytest.approx(0.64)
    assert budgets.wait_for("b", 0.0) == 0.0  # another client is not touched
    clock.t += 0.64
    assert budgets.wait_for("a", 0.0) == pytest.approx(0.0, abs=1e-9)
    assert ClientBudgets(0.0, 1.0).wait_for("a", 5.0) == 0.0  # off


def test_a_client_in_debt_is_held_then_refused_and_a_request_over_the_burst_is_413(
    fp_model, fp_stats
):
    from entroguard.serve.app import ServeLimits, Service

    limits = ServeLimits(budget_packets_per_s=50, burst_packets=8)
    service = Service(fp_model, limits=limits, clean_stats=fp_stats)
    service.packet_budgets.charge("peer:x", 8 + 5)  # 5 packets of debt: 0.1 s to repay

    async def main() -> float:
        t0 = time.monotonic()
        with pytest.raises(ServeError) as info:
            await service.check_budgets("peer:x")
        assert info.value.reason == "rate_limited"
        assert info.value.headers["Connection"] == "close"
        return time.monotonic() - t0

    assert asyncio.run(main()) >= 0.09  # the answer waited out the debt (the tarpit)
    with pytest.raises(ServeError, match="larger than the per-client burst of 8 packets"):
        service._charge_packets("peer:y", 9)
