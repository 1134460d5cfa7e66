"""Where a batch runs: on the event loop when that is cheaper than handing it to a thread.

Handing a batch to the model's thread and back costs two thread wake-ups, 150-200 µs on a small
virtual machine: several times the mlp's whole batch (20-40 µs). So a batch whose predicted cost
is at most `BatchingConfig.max_inline_cost` runs on the event loop's own thread. Two guards keep
a slow model from freezing the server:

- `CostModel` predicts a batch's cost from the last batches of about its size that this model
  ran (wherever they ran); a size never seen, or grown costly, goes to the thread, and every
  batch run there keeps the prediction current.
- `Watchdog`, one thread per process, interrupts an inline run that overstays its limit (the
  runtime's interrupt flag: onnxruntime's `RunOptions.terminate`); the batch then reruns on the
  model's thread, and the time it took keeps that size there until a batch of it is cheap
  again.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol


class Interrupt(Protocol):
    """A flag the runtime checks between its steps; once set, the run raises."""

    terminate: bool


class CostModel:
    """Per batch size rounded up to a power of two, the least seconds of its last few batches:
    the model's own cost. Waits for a core or for the GIL only ever add to a run's time, and a
    run on the worker thread pays them more than one on the loop, so the least is the figure
    that compares; a run the watchdog cut short replaces its size's history instead."""

    def __init__(self, window: int = 8) -> None:
        # Index: rows.bit_length().
        self._recent: list[deque[float]] = [deque(maxlen=window) for _ in range(32)]

    def observe(self, rows: int, seconds: float) -> None:
        self._recent[rows.bit_length()].append(seconds)

    def overran(self, rows: int, seconds: float) -> None:
        recent = self._recent[rows.bit_length()]
        recent.clear()
        recent.append(seconds)

    def predict(self, rows: int) -> float | None:
        """The expected seconds for `rows`; None when no batch of this size or larger ran and
        nothing smaller either. A larger size's figure bounds a smaller one's; a smaller one's
        is scaled up by the ratio of the sizes."""
        bucket = rows.bit_length()
        recent = self._recent
        for larger in range(bucket, len(recent)):
            if recent[larger]:
                return min(recent[larger])
        for smaller in range(bucket - 1, 0, -1):
            if recent[smaller]:
                return min(recent[smaller]) * (1 << (bucket - smaller))
        return None


class Watch:
    """One batcher's slot: what runs inline now and when it must be done by."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        # Set and cleared as one tuple, so the watchdog never pairs a flag with another's limit.
        self.current: tuple[Interrupt, float] | None = None

    def arm(self, interrupt: Interrupt, deadline: float) -> None:
        self.current = (interrupt, deadline)

    def disarm(self) -> None:
        self.current = None


class Watchdog:
    """A daemon thread that wakes every `period` seconds and interrupts overdue inline runs.

    Arming costs the event loop one attribute store: no lock, no wake-up. A run that ends just as
    the watchdog fires may have its (fresh, per-run) flag set after the fact, which is harmless.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self._watches: list[Watch] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self) -> Watch:
        watch = Watch()
        with self._lock:
            self._watches = [*self._watches, watch]
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="inline-watchdog")
                self._thread.daemon = True  # it holds nothing that needs an orderly end
                self._thread.start()
        return watch

    def forget(self, watch: Watch) -> None:
        with self._lock:
            self._watches = [w for w in self._watches if w is not watch]

    def _run(self) -> None:
        while True:
            time.sleep(self.period)
            now = time.monotonic()
            for watch in self._watches:  # replaced, never mutated: safe to iterate unlocked
                current = watch.current
                if current is not None and now > current[1] and not current[0].terminate:
                    current[0].terminate = True


WATCHDOG = Watchdog()
