"""Training batches built one step ahead on a background thread.

The batch of global step `step` is a pure function of the step (see training/phases.py), so
building step + 1's batch while step trains changes nothing but the wall time: the main thread
never waits on numpy indexing or SFT padding, and on CUDA the rows are copied into pinned
(page-locked) memory there, so `.to(device, non_blocking=True)` in the loop is a real
asynchronous copy. One worker thread keeps the calls in step order (SFT batches keep an
iterator between steps).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from proximity.training.losses import Batch


class BatchPrefetcher:
    """`get(step)` returns `make_batch(step)`, with `make_batch(step + 1)` already under way."""

    def __init__(
        self, make_batch: Callable[[int], Batch], first_step: int, stop_step: int, pin: bool
    ):
        self._make_batch, self._pin, self._stop_step = make_batch, pin, stop_step
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batches")
        self._pending: dict[int, Future[Batch]] = {}
        self._submit(first_step)

    def _build(self, step: int) -> Batch:
        inputs, targets = self._make_batch(step)
        if self._pin:
            # Contiguous first: batches are often strided views (input/target shifts), and a
            # strided pinned tensor is copied to the GPU through a pageable temporary on the
            # main thread, i.e. not asynchronously at all.
            inputs, targets = inputs.contiguous().pin_memory(), targets.contiguous().pin_memory()
        return inputs, targets

    def _submit(self, step: int) -> None:
        if step < self._stop_step and step not in self._pending:
            self._pending[step] = self._executor.submit(self._build, step)

    def get(self, step: int) -> Batch:
        future = self._pending.pop(step, None)
        if future is None:  # not the step we prefetched (a caller jumped): build it now
            for stale in self._pending.values():
                stale.result()  # let the worker finish in order before asking for another
            self._pending.clear()
            future = self._executor.submit(self._build, step)
        self._submit(step + 1)
        return future.result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
