"""What a running job tells its user: progress lines for long stages and the peak memory of a stage.

Progress goes to the log (dataio/log.py: stdout) as plain lines (a job's log is a file, not a
terminal): one at every tenth of the work or every 30 s, whichever comes first, with an estimate of
the time left.
"""

from __future__ import annotations

import threading
import time

import psutil

from dataio.log import get_logger

log = get_logger(__name__)


class Progress:
    def __init__(self, what: str, total: int, unit: str, every_s: float = 30.0):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.done, self.start, self.last_line, self.last_tenth = 0, time.perf_counter(), time.perf_counter(), 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now, tenth = time.perf_counter(), 10 * self.done // max(self.total, 1)
        if tenth > self.last_tenth or now - self.last_line >= self.every_s or self.done == self.total:
            elapsed = now - self.start
            left = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
            log.info(
                f"{self.what}: {self.done}/{self.total} {self.unit} "
                f"({100 * self.done / max(self.total, 1):.0f}%), "
                f"{elapsed:.0f} s elapsed, ~{left:.0f} s left"
            )
            self.last_line, self.last_tenth = now, tenth


def gpu_memory_used() -> int | None:
    """Bytes in use on this node's GPUs (NVML, from the `gpu` extra's nvidia-ml-py); None without them."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        return sum(pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles) or None
    except pynvml.NVMLError:  # no driver or no GPU on this node
        return None


class PeakRss:
    """Peak resident memory of this process and its children (a local Ray cluster's processes are
    the driver's children), sampled; `peak` is above the level at start, `peak_total` absolute;
    `peak_gpu` the most GPU memory in use on this node (None without GPUs or nvidia-ml-py)."""

    def __init__(self, interval: float = 0.01, *, gpu: bool = False):
        self.interval, self.peak, self.peak_total, self._stop = interval, 0, 0, threading.Event()
        self.gpu, self.peak_gpu = gpu, None

    @staticmethod
    def _rss() -> int:
        proc = psutil.Process()
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> PeakRss:
        self.start = self._rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        now = self._rss()
        self.peak_total = max(self.peak_total, now)
        self.peak = max(self.peak, now - self.start)
        used = gpu_memory_used() if self.gpu else None
        if used is not None:
            self.peak_gpu = max(self.peak_gpu or 0, used)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
