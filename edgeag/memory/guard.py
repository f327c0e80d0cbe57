"""The budget guard: a daemon thread that samples this process's memory and raises a
flag when it crosses the budget."""

from __future__ import annotations

import os
import threading
import time

from edgeag.memory.readings import Reading, peak_rss_bytes, read_memory

SAMPLE_INTERVAL = 0.05
"""Guard sampling interval in seconds. One reading of /proc/self/status takes tens of
microseconds, so 20 readings a second cost well under 0.1% of one core, while a
crossing is seen within 50 ms."""



class BudgetGuard:
    """Samples this process's memory on a daemon thread and raises a flag when its
    anonymous memory (`Reading.anon`: RssAnon + RssShmem) crosses the budget; the
    training loop checks :attr:`exceeded` at each update boundary.

    Its state is constant whatever the length of the run (the number of samples, the
    last one and the peaks); with ``csv`` each sample is also appended to that file as
    it is taken (``seconds,rss_bytes,anon_bytes``, flushed), so a run killed with
    SIGKILL keeps its series. :meth:`peak_rss_bytes` is the kernel's high-water mark of
    the whole RSS, so a spike between two samples still shows there.
    """

    CSV_HEADER = "seconds,rss_bytes,anon_bytes\n"

    def __init__(self, budget_bytes: int, interval: float = SAMPLE_INTERVAL,
                 csv: str | os.PathLike | None = None, t_offset: float = 0.0) -> None:
        self.budget_bytes = budget_bytes
        self.interval = interval
        self.t_offset = t_offset
        """Added to every sample's time in the csv (a resumed run's earlier seconds)."""
        self.samples = 0
        self.last: tuple[float, Reading] | None = None
        self.peak_anon_bytes = 0
        """The highest anonymous memory sampled."""
        self.max_sampled_rss_bytes = 0
        self.exceeded_at: float | None = None
        """Monotonic time of the first sample above the budget."""
        self._csv_path = csv
        self._csv = None
        self.write_error: OSError | None = None
        """Why streaming to the csv stopped (a full disk, a file-size limit); sampling
        and the budget go on."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._exceeded = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    @property
    def exceeded(self) -> bool:
        return self._exceeded.is_set()

    def sample(self) -> Reading:
        """Take one reading now (also called by the thread)."""
        reading = read_memory()
        now = time.monotonic()
        with self._lock:
            self.samples += 1
            self.last = (now - self._t0, reading)
            self.peak_anon_bytes = max(self.peak_anon_bytes, reading.anon)
            self.max_sampled_rss_bytes = max(self.max_sampled_rss_bytes, reading.rss)
            if self._csv is not None:
                try:
                    self._csv.write(f"{now - self._t0 + self.t_offset:.3f},{reading.rss},"
                                    f"{reading.anon}\n")
                    self._csv.flush()
                except OSError as e:
                    self.write_error, csv, self._csv = e, self._csv, None
                    try:
                        csv.close()
                    except OSError:
                        pass
        if reading.anon > self.budget_bytes and not self._exceeded.is_set():
            self.exceeded_at = now
            self._exceeded.set()
        return reading

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stream_to(self, csv: str | os.PathLike, t_offset: float = 0.0) -> None:
        """From now on append every sample to ``csv`` (with a header if it is new);
        ``t_offset`` is added to the samples' times (a resumed run's earlier seconds)."""
        new = not os.path.exists(csv) or os.path.getsize(csv) == 0
        f = open(csv, "a", buffering=1 << 16)
        if new:
            f.write(self.CSV_HEADER)
            f.flush()
        with self._lock:
            self.t_offset, self._csv = t_offset, f

    def start(self) -> BudgetGuard:
        self._t0 = time.monotonic()
        if self._csv_path is not None:
            self.stream_to(self._csv_path, self.t_offset)
        self.sample()
        self._thread = threading.Thread(target=self._run, name="edgeag-budget-guard",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        with self._lock:
            if self._csv is not None:
                try:
                    self._csv.close()
                except OSError as e:
                    self.write_error = self.write_error or e
                self._csv = None

    def __enter__(self) -> BudgetGuard:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark of the whole RSS (never below any sample)."""
        return max(peak_rss_bytes(), self.max_sampled_rss_bytes)
