"""Adaptive batching (`serve.batcher`): a batch forms when the model is free, not when a
window closes. Serve's `@serve.batch` formed batches while the model computed, so under load
they held 3-4 requests each and queued; with a long window a lone request waited it out."""

from __future__ import annotations

import asyncio

import pytest

from biogner.serve.batcher import AdaptiveBatcher


class Model:
    """A model whose batches finish when the test says so; records what each batch held."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.started.set()
        await self.release.wait()
        if -1 in items:
            raise RuntimeError("model failure")
        return [2 * i for i in items]


def test_a_lone_request_on_an_idle_model_starts_at_once() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = AdaptiveBatcher(model.run, max_batch_size=32, wait_s=0.0)
        call = asyncio.create_task(batcher(5))
        await asyncio.wait_for(model.started.wait(), 1.0)  # no window to wait out
        assert model.batches == [[5]]
        model.release.set()
        assert await call == 10

    asyncio.run(scenario())


def test_requests_arriving_while_the_model_computes_form_one_next_batch() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = AdaptiveBatcher(model.run, max_batch_size=8, wait_s=0.0)
        first = asyncio.create_task(batcher(0))
        await model.started.wait()
        waiting = [asyncio.create_task(batcher(i)) for i in range(1, 12)]
        for _ in range(5):  # give every caller the chance to enqueue (and the batcher to
            await asyncio.sleep(0)  # form batches, which it must not do while busy)
        assert model.batches == [[0]]
        model.release.set()
        results = await asyncio.gather(first, *waiting)
        assert results == [2 * i for i in range(12)]
        assert model.batches == [[0], list(range(1, 9)), list(range(9, 12))]

    asyncio.run(scenario())


def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    async def scenario() -> None:
        model = Model()
        model.release.set()
        batcher = AdaptiveBatcher(model.run, max_batch_size=4)
        with pytest.raises(RuntimeError, match="model failure"):
            await batcher(-1)
        assert await batcher(3) == 6

    asyncio.run(scenario())


def test_a_cancelled_request_is_left_out_of_its_batch() -> None:
    async def scenario() -> None:
        model = Model()
        batcher = AdaptiveBatcher(model.run, max_batch_size=8)
        first = asyncio.create_task(batcher(0))
        await model.started.wait()
        gone = asyncio.create_task(batcher(1))
        kept = asyncio.create_task(batcher(2))
        await asyncio.sleep(0)
        gone.cancel()
        model.release.set()
        assert await kept == 4 and await first == 0
        assert model.batches == [[0], [2]]

    asyncio.run(scenario())


def test_under_load_a_batch_waits_for_the_burst_but_a_lone_request_does_not() -> None:
    """Closed-loop clients resend right after their answers: after a batch of several, the
    next waits (up to wait_s) for more; after a lone request, one starts at once."""

    async def scenario() -> None:
        model = Model()
        model.release.set()
        batcher = AdaptiveBatcher(model.run, max_batch_size=4, wait_s=30.0)
        assert await asyncio.wait_for(batcher(1), 5.0) == 2  # idle: no 30 s wait
        assert await asyncio.wait_for(batcher(2), 5.0) == 4  # still idle
        model.release.clear()
        busy = asyncio.create_task(batcher(0))
        await asyncio.sleep(0)
        burst = [asyncio.create_task(batcher(i)) for i in (3, 4, 5)]
        await asyncio.sleep(0)
        model.release.set()
        await asyncio.gather(busy, *burst)
        # loaded now: the next batch waits for a full batch of 4 rather than starting on 1
        later = [asyncio.create_task(batcher(i)) for i in (6, 7)]
        await asyncio.sleep(0.05)
        later += [asyncio.create_task(batcher(i)) for i in (8, 9)]
        assert await asyncio.wait_for(asyncio.gather(*later), 5.0) == [12, 14, 16, 18]
        assert model.batches[-1] == [6, 7, 8, 9]

    asyncio.run(scenario())
