"""Operational metrics of the session layer (``SESSION_METRICS = True``).

What operators ask of a session store, counted where it happens: sessions opened (by what
the store found: loaded, missing, expired, corrupt, unauthenticated …), what the end of
each request did (created, saved, touched, unchanged, deleted), the time to open a session
(waiting for its lock, then reading it), the size of each record written, lock timeouts,
store outages, and the automatic sweeper's runs. :func:`snapshot` reads them back.

**Cost.** A request pays a few increments of a list of numbers owned by its thread: no
lock, no call into ``prometheus_client`` (whose every ``inc()`` takes a lock and, in
multiprocess mode, writes an mmap: four of those per request would cost a quarter of the
session's own overhead). Totals are summed over the threads when read. With
``SESSION_METRICS`` off (the default) nothing is built and the request path does not look
at any of this.

**Prometheus** (``prometheus_client`` installed, e.g. through the
``flask-beaker-session[prometheus]`` extra): the metrics are named ``flask_beaker_session_*``.
In a single process a collector in ``prometheus_client``'s default registry reads the
totals at each scrape. Under a pre-fork server with ``prometheus_client``'s multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR`` set before the app starts), each process writes its
totals into that directory at most every :data:`FLUSH_INTERVAL` seconds (and at exit) from
a background thread, and the standard ``MultiProcessCollector`` adds up the workers: a
scrape sees every request answered more than a second before it.

The metrics are process-wide: one set however many apps of the process turn them on.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from . import _core, _fork

__all__ = ["FLUSH_INTERVAL", "PREFIX", "Metrics", "process_metrics", "snapshot"]

#: Prefix of every metric name.
PREFIX = "flask_beaker_session_"
#: Seconds between two writes of a process's totals in multiprocess mode.
FLUSH_INTERVAL = 1.0

#: Upper bounds (seconds) of the time-to-open histogram: an uncontended open takes tens of
#: microseconds; waits behind another request of the same session take up to the lock
#: timeout.
OPEN_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
#: Upper bounds (bytes) of the record-size histogram.
SIZE_BUCKETS = (256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0)
#: Upper bounds (seconds) of the sweep-duration histogram.
SWEEP_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 600.0)

#: The ``result`` label of an open, by what the store found.
_RESULTS: dict[_core.OpenStatus, str] = {
    _core.OpenStatus.Found: "loaded",
    _core.OpenStatus.Missing: "missing",
    _core.OpenStatus.Invalid: "invalid",
    _core.OpenStatus.Expired: "expired",
    _core.OpenStatus.Corrupt: "corrupt",
    _core.OpenStatus.Newer: "newer",
    _core.OpenStatus.Untrusted: "untrusted",
    _core.OpenStatus.Unauthenticated: "unauthenticated",
}
#: The ``outcome`` label of a save (the values of ``stored.Outcome``).
OUTCOMES = ("created", "saved", "touched", "unchanged", "nothing", "deleted")

#: name -> (kind, help, (label name, label values) or None, histogram buckets or None).
_SPEC: dict[str, tuple[str, str, tuple[str, tuple[str, ...]] | None, tuple[float, ...] | None]]
_SPEC = {
    "opens": (
        "counter",
        "Sessions opened for a request, by what the store found",
        ("result", tuple(_RESULTS.values())),
        None,
    ),
    "saves": (
        "counter",
        "What the end of a request did with its session",
        ("outcome", OUTCOMES),
        None,
    ),
    "corrupt_payloads": (
        "counter",
        "Stored sessions whose data could not be unpickled (removed)",
        None,
        None,
    ),
    "lock_timeouts": (
        "counter",
        "Requests answered 503 because another request held the session too long",
        None,
        None,
    ),
    "store_unavailable": (
        "counter",
        "Requests answered 503 because the session store could not be reached",
        None,
        None,
    ),
    "open_seconds": (
        "histogram",
        "Time to open a session: waiting for its lock, then reading and verifying it",
        None,
        OPEN_BUCKETS,
    ),
    "record_bytes": (
        "histogram",
        "Size of each session payload written (pickled data)",
        None,
        SIZE_BUCKETS,
    ),
    "sweeps": ("counter", "Automatic sweeps run by this process", None, None),
    "sweep_removed": (
        "counter",
        "Records removed by automatic sweeps (expired, corrupt, temporary)",
        None,
        None,
    ),
    "sweep_seconds": ("histogram", "Duration of automatic sweeps", None, SWEEP_BUCKETS),
}
#: Gauges are set, not added up: kept apart from the per-thread counts.
_GAUGES = {"sweep_kept": "Live records the last automatic sweep kept"}


class _Layout:
    """Where each number lives in a thread's list: one slot per counter (and label
    value); per histogram one slot per bucket (not cumulative, ``+Inf`` last) and one for
    the sum."""

    def __init__(self) -> None:
        self.size = 0
        #: name -> first slot.
        self.base: dict[str, int] = {}
        for name, (kind, _, labels, buckets) in _SPEC.items():
            self.base[name] = self.size
            if kind == "histogram":
                assert buckets is not None
                self.size += len(buckets) + 2  # buckets, +Inf, sum
            else:
                self.size += len(labels[1]) if labels else 1

    def values(self, name: str, totals: list[float]) -> Any:
        """One metric's value(s) in :func:`snapshot`'s shape."""
        kind, _, labels, buckets = _SPEC[name]
        base = self.base[name]
        if kind == "histogram":
            assert buckets is not None
            counts = totals[base : base + len(buckets) + 1]
            cumulative, acc = {}, 0.0
            for bound, count in zip(buckets, counts):
                acc += count
                cumulative[bound] = int(acc)
            return {
                "count": int(sum(counts)),
                "sum": totals[base + len(buckets) + 1],
                "buckets": cumulative,
            }
        if labels:
            return {value: totals[base + i] for i, value in enumerate(labels[1])}
        return totals[base]


LAYOUT = _Layout()


class Metrics:
    """The process's metrics, with one method per event the session layer reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: Every thread's list (kept after the thread ends: counts never go backwards).
        self._lists: list[list[float]] = []
        self._local = threading.local()
        #: name -> (value, when it was set: epoch seconds, 0.0 never).
        self._gauges: dict[str, tuple[float, float]] = dict.fromkeys(_GAUGES, (0.0, 0.0))
        base = LAYOUT.base
        self._open_slot = {s: base["opens"] + i for i, s in enumerate(_RESULTS)}
        self._loaded_slot = self._open_slot[_core.OpenStatus.Found]
        from .stored import Outcome  # (stored imports this module)

        self._save_slot = {id(Outcome(o)): base["saves"] + i for i, o in enumerate(OUTCOMES)}
        self._open_hist = base["open_seconds"]
        self._open_sum = self._open_hist + len(OPEN_BUCKETS) + 1
        self._size_hist = base["record_bytes"]
        self._size_sum = self._size_hist + len(SIZE_BUCKETS) + 1
        #: The multiprocess writer (None: single process, or no prometheus_client).
        self._flusher: _Flusher | None = None

    def _thread_list(self) -> list[float]:
        try:
            counts: list[float] = self._local.counts
        except AttributeError:
            counts = [0.0] * LAYOUT.size
            self._local.counts = counts
            with self._lock:
                self._lists.append(counts)
            flusher = self._flusher
            if flusher is not None:
                flusher.ensure_started()
        return counts

    def reset_after_fork(self) -> None:
        """A forked child starts from zero: the parent's counts are the parent's."""
        self._lock = threading.Lock()
        self._lists = []
        self._local = threading.local()
        self._gauges = dict.fromkeys(_GAUGES, (0.0, 0.0))
        if self._flusher is not None:
            self._flusher = _Flusher(self)

    # -- events (the request path: a few list increments, no lock) ---------------------

    def opened(self, status: _core.OpenStatus | None, seconds: float) -> None:
        """A request opened its session: what the store found (None: a session, loaded),
        and how long it took."""
        try:  # (inline: a method call per request is most of what counting costs)
            counts: list[float] = self._local.counts
        except AttributeError:
            counts = self._thread_list()
        counts[self._loaded_slot if status is None else self._open_slot[status]] += 1
        counts[self._open_hist + bisect_left(OPEN_BUCKETS, seconds)] += 1
        counts[self._open_sum] += seconds

    def saved(self, outcome: Any, size: int | None) -> None:
        """What the end of a request did (a ``stored.Outcome``); ``size``: bytes written
        (None: nothing)."""
        try:
            counts: list[float] = self._local.counts
        except AttributeError:
            counts = self._thread_list()
        # By identity: an Enum member's hash is a Python-level call.
        counts[self._save_slot[id(outcome)]] += 1
        if size is not None:
            counts[self._size_hist + bisect_left(SIZE_BUCKETS, size)] += 1
            counts[self._size_sum] += size

    def count(self, name: str) -> None:
        """One more of a plain counter (``lock_timeouts``, ``store_unavailable``, …)."""
        self._thread_list()[LAYOUT.base[name]] += 1

    def swept(self, report: _core.Report, seconds: float) -> None:
        """An automatic sweep ran."""
        counts = self._thread_list()
        counts[LAYOUT.base["sweeps"]] += 1
        counts[LAYOUT.base["sweep_removed"]] += report.removed
        hist = LAYOUT.base["sweep_seconds"]
        counts[hist + bisect_left(SWEEP_BUCKETS, seconds)] += 1
        counts[hist + len(SWEEP_BUCKETS) + 1] += seconds
        self._gauges["sweep_kept"] = (float(report.live), time.time())

    # -- reading -------------------------------------------------------------------------

    def totals(self) -> list[float]:
        """Every slot summed over the threads."""
        with self._lock:
            lists = list(self._lists)
        totals = [0.0] * LAYOUT.size
        for counts in lists:
            for i, value in enumerate(counts):
                if value:
                    totals[i] += value
        return totals

    def read(self) -> dict[str, Any]:
        """Every metric's value in this process (see :func:`snapshot`)."""
        totals = self.totals()
        out = {name: LAYOUT.values(name, totals) for name in _SPEC}
        out.update((name, value) for name, (value, _) in self._gauges.items())
        return out

    def gauges(self) -> dict[str, tuple[float, float]]:
        """Each gauge's value and the time it was set."""
        return dict(self._gauges)


# -- Prometheus ------------------------------------------------------------------------


def _families(metrics: Metrics) -> Iterator[Any]:
    """The metrics as ``prometheus_client`` metric families (single-process export)."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    totals = metrics.totals()
    for name, (kind, help_, labels, _) in _SPEC.items():
        value = LAYOUT.values(name, totals)
        if kind == "histogram":
            buckets = [(repr(float(b)), v) for b, v in value["buckets"].items()]
            buckets.append(("+Inf", value["count"]))
            yield HistogramMetricFamily(
                PREFIX + name, help_, buckets=buckets, sum_value=value["sum"]
            )
        elif labels:
            family = CounterMetricFamily(PREFIX + name, help_, labels=[labels[0]])
            for label, count in value.items():
                family.add_metric([label], count)
            yield family
        else:
            yield CounterMetricFamily(PREFIX + name, help_, value=value)
    for name, (gauge, _) in metrics.gauges().items():
        yield GaugeMetricFamily(PREFIX + name, _GAUGES[name], value=gauge)


class _Collector:
    """Registered in ``prometheus_client``'s default registry (single process)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return _families(self.metrics)


class _Flusher:
    """Multiprocess mode: writes this process's totals into ``PROMETHEUS_MULTIPROC_DIR``
    through ``prometheus_client``'s own value files, from one thread per process."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.thread = _fork.ProcessThread("flask-beaker-session-metrics", self._run)
        self._values: list[Any] | None = None
        self._gauges: dict[str, Any] = {}
        self._written: list[float] = []

    def ensure_started(self) -> None:
        self.thread.ensure_started()

    def _value_objects(self) -> list[Any]:
        from prometheus_client.values import ValueClass

        values: list[Any] = []
        for name, (kind, help_, labels, buckets) in _SPEC.items():
            full = PREFIX + name
            if kind == "histogram":
                assert buckets is not None
                for bound in (*buckets, float("inf")):
                    le = "+Inf" if bound == float("inf") else repr(float(bound))
                    values.append(ValueClass(kind, full, full + "_bucket", ("le",), (le,), help_))
                values.append(ValueClass(kind, full, full + "_sum", (), (), help_))
            elif labels:
                for label in labels[1]:
                    values.append(
                        ValueClass(kind, full, full + "_total", (labels[0],), (label,), help_)
                    )
            else:
                values.append(ValueClass(kind, full, full + "_total", (), (), help_))
        for name, help_ in _GAUGES.items():
            self._gauges[name] = ValueClass(
                "gauge", PREFIX + name, PREFIX + name, (), (), help_, multiprocess_mode="mostrecent"
            )
        return values

    def flush(self) -> None:
        """Writes the totals if they changed since the last write."""
        totals = self.metrics.totals()
        if totals == self._written:
            return
        if self._values is None:
            self._values = self._value_objects()
        for value, total in zip(self._values, totals):
            value.set(total)
        for name, (gauge, when) in self.metrics.gauges().items():
            if when:  # "mostrecent": the worker that set it last wins
                self._gauges[name].set(gauge, timestamp=when)
        self._written = totals

    def _run(self, stop: threading.Event) -> None:
        generation = self.thread.started_in
        while not stop.wait(FLUSH_INTERVAL):
            if _fork.FORKS.generation != generation:
                return  # this thread belongs to a parent (a child runs its own)
            try:
                self.flush()
            except Exception:  # metrics must never take a worker down
                from ._log import logger

                logger.exception("writing session metrics failed")


_lock = threading.Lock()
_metrics: Metrics | None = None


def _multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode (as it decides itself)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def process_metrics() -> Metrics:
    """The metrics of this process (built, and exported to Prometheus, on first use)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics()
            try:
                import prometheus_client
            except ImportError:
                pass
            else:
                if _multiprocess():
                    _metrics._flusher = _Flusher(_metrics)
                    atexit.register(_flush_at_exit)
                else:
                    prometheus_client.REGISTRY.register(_Collector(_metrics))
        return _metrics


def _flush_at_exit() -> None:
    """A worker that exits (gunicorn's max-requests, a reload) leaves its last counts."""
    flusher = _metrics._flusher if _metrics is not None else None
    if flusher is not None:
        flusher.flush()


@_fork.on_fork_in_child
def _reset_in_child() -> None:
    if _metrics is not None:
        _metrics.reset_after_fork()


def snapshot() -> dict[str, Any]:
    """This process's session metrics (all zero while ``SESSION_METRICS`` was never on).

    Keys are the metric names without the ``flask_beaker_session_`` prefix (and, for
    counters, without Prometheus' ``_total``): ``opens`` and ``saves`` map their label
    (``result``, ``outcome``) to a count; histograms (``open_seconds``, ``record_bytes``,
    ``sweep_seconds``) give ``count``, ``sum`` and cumulative ``buckets`` (upper bound →
    observations at or below it); ``sweep_kept`` is the last sweep's live records.
    """
    return process_metrics().read()
