"""Adaptive batching: a batch starts as soon as the model is free, with everything waiting.

Serve's `@serve.batch` forms a batch when its window closes, whether or not the model is
free: a window of 0.02 s under load formed batches of 3-4 requests that then queued for the
model, and 0.25 s filled them but made a lone request on an idle replica wait 0.25 s
(bench/results/archive/serving.md, "Serving: adaptive batching"). Here requests wait in
one queue and a batch is formed only when a model
slot is free (`max_concurrent_batches`): an idle replica serves a lone request at once, and a
busy one gathers every request that arrived during the batch before into the next, up to
`max_batch_size`. Under load (the batch before held several requests) a batch may wait up to
`wait_s` (`batching.batch_wait_timeout_s`) for more once the model is free: clients in a closed
loop all send their next request right after their answers, and a batch started on the first
of them would make the others wait for it. A request after a lone one (an idle replica) never
waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class AdaptiveBatcher(Generic[Item, Result]):
    """Calls `run(batch)` (a list of items -> a list of results, same order) on batches
    formed whenever a model slot is free."""

    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[list[Result]]],
        max_batch_size: int,
        wait_s: float = 0.0,
        slots: int = 1,
        weight: Callable[[Item], int] = lambda item: 1,
        max_weight: int | None = None,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.slots = slots
        # a batch also stops growing when the next item's weight would pass max_weight (the
        # first item always goes in): batches bounded by model inputs, not by requests
        self.weight, self.max_weight = weight, max_weight
        self._held: tuple[Item, asyncio.Future[Result]] | None = None  # opens the next batch
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Result]]] | None = None
        self._free: asyncio.Semaphore | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loaded = False  # the last batch held several requests

    @property
    def waiting(self) -> int:
        """Items waiting for a batch."""
        queued = self._queue.qsize() if self._queue is not None else 0
        return queued + (self._held is not None)

    async def __call__(self, item: Item) -> Result:
        if self._worker is None or self._worker.done():
            self._queue, self._free = asyncio.Queue(), asyncio.Semaphore(self.slots)
            self._worker = asyncio.create_task(self._form_batches())
        assert self._queue is not None
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _form_batches(self) -> None:
        assert self._queue is not None and self._free is not None
        while True:
            await self._free.acquire()  # a model slot first: the batch forms when it is free
            first = self._held if self._held is not None else await self._queue.get()
            self._held = None
            batch = [first]
            load = self.weight(first[0])
            if self.wait_s > 0 and self._loaded:
                deadline = asyncio.get_running_loop().time() + self.wait_s
                while len(batch) < self.max_batch_size and self._held is None:
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    try:
                        load = self._add(
                            batch, await asyncio.wait_for(self._queue.get(), left), load
                        )
                    except TimeoutError:
                        break
            while (
                len(batch) < self.max_batch_size and self._held is None and not self._queue.empty()
            ):
                load = self._add(batch, self._queue.get_nowait(), load)
            live = [(item, future) for item, future in batch if not future.done()]
            self._loaded = len(live) > 1
            if not live:
                self._free.release()
                continue
            asyncio.create_task(self._run(live))

    def _add(
        self,
        batch: list[tuple[Item, asyncio.Future[Result]]],
        entry: tuple[Item, asyncio.Future[Result]],
        load: int,
    ) -> int:
        """Put `entry` in the batch if its weight fits, else hold it to open the next one."""
        weight = self.weight(entry[0])
        if self.max_weight is not None and load + weight > self.max_weight:
            self._held = entry
            return load
        batch.append(entry)
        return load + weight

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        assert self._free is not None
        try:
            results = await self.run([item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except BaseException as exc:  # every waiting caller learns of the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._free.release()
