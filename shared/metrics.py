"""Declared Prometheus metrics: the machinery the three processes share.

Each process declares its series once, in its own module (``receiver/metrics.py``,
``transmitter/metrics.py``, ``channel/metrics.py``): a fixed name in base units (seconds, bytes;
the paper's bit figures as bits / 8, since promtool takes the byte as the unit of information),
a HELP line a Grafana user can act on, a type, and labels for what varies (direction,
impairment, link, outcome), never names built from data. Most series are read from the
process's ``/stats`` snapshot at scrape time (:class:`DeclaredCollector`, so ``/stats`` and
``/metrics`` cannot disagree); what a snapshot cannot hold — per-frame latencies, message sizes —
is observed by the shell into real ``prometheus_client`` histograms registered beside it.

Names are checked where they are declared (:func:`check_name`): ``promtool check metrics``
rejects ``_count``/``_sum``/``_bucket`` on gauges, counters without ``_total`` and non-base
units such as ``_ms`` or ``_bits``, and so does this module, at import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["counter", "gauge"]
# One sample: its label values (in the family's label order) and its value; None: not defined
# now (e.g. no frame yet), left out of the scrape.
Samples = Mapping[tuple[str, ...], float | None]
Reader = Callable[[Any], float | None | Samples]

_NAME = re.compile(r"^hoplink_(rx|tx|channel)_[a-z][a-z0-9_]*[a-z0-9]$")
_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
# Suffixes that name a unit other than the base one, or that the exposition format reserves.
_NOT_BASE_UNITS = (
    "_ms",
    "_milliseconds",
    "_us",
    "_microseconds",
    "_minutes",
    "_hours",
    "_kb",
    "_kilobytes",
    "_mb",
    "_megabytes",
    "_bits",  # promtool: information is counted in bytes (bit figures are exposed as bits / 8)
    "_kbps",
    "_mbps",
    "_percent",
)
_RESERVED = ("_total", "_count", "_sum", "_bucket", "_created", "_info")

# Bucket bounds shared by the processes, so Tx, channel and Rx histograms line up in Grafana.
LATENCY_BUCKETS_SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SIZE_BUCKETS_BYTES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 16384, 65536, 262144)


class MetricDeclarationError(ValueError):
    """A metric or label name that Prometheus' conventions (and promtool) reject."""


def check_name(name: str, kind: str, labels: Sequence[str] = ()) -> str:
    """``name`` if it follows the conventions, else a :class:`MetricDeclarationError` naming
    the rule it breaks. Counters are declared without ``_total`` (the client appends it)."""
    if not _NAME.match(name):
        raise MetricDeclarationError(
            f"metric {name!r}: expected hoplink_<rx|tx|channel>_<snake_case name>"
        )
    for suffix in _RESERVED:
        if name.endswith(suffix):
            raise MetricDeclarationError(
                f"metric {name!r} ({kind}): the suffix {suffix!r} is reserved "
                "(counters get _total from the client; counts are gauges without _count)"
            )
    for suffix in _NOT_BASE_UNITS:
        if name.endswith(suffix) or f"{suffix}_" in name:
            raise MetricDeclarationError(
                f"metric {name!r}: {suffix[1:]!r} is not a base unit (use seconds, bytes, "
                "or a ratio in [0, 1])"
            )
    for label in labels:
        if not _LABEL.match(label) or label.startswith("__") or label in ("le", "quantile"):
            raise MetricDeclarationError(f"metric {name!r}: invalid label name {label!r}")
    return name


@dataclass(frozen=True)
class Declared:
    """One declared counter or gauge family and how to read it from a stats snapshot.

    ``read(snapshot)`` returns the value of an unlabelled family (None: left out), or a mapping
    from label values to values for a labelled one."""

    kind: Kind
    name: str
    help: str
    read: Reader
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.name, self.kind, self.labels)
        if not self.help or self.help.strip() != self.help:
            raise MetricDeclarationError(f"metric {self.name!r}: HELP must be a sentence")

    def family(self, snapshot: Any | None) -> Any:
        """The family with its samples from ``snapshot`` (None: an empty family, to describe)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.help, labels=list(self.labels))
        if snapshot is None:
            return family
        value = self.read(snapshot)
        if value is None:
            return family
        if isinstance(value, Mapping):
            if not self.labels:
                raise MetricDeclarationError(f"metric {self.name!r}: labelled samples, no labels")
            for key, sample in value.items():
                if sample is not None:
                    family.add_metric([str(k) for k in key], float(sample))
        elif self.labels:
            raise MetricDeclarationError(f"metric {self.name!r}: one value for labels")
        else:
            family.add_metric([], float(value))
        return family


def counter(name: str, help: str, read: Reader, labels: Sequence[str] = ()) -> Declared:
    """A monotonic count (exposed as ``<name>_total``)."""
    return Declared("counter", name, help, read, tuple(labels))


def gauge(name: str, help: str, read: Reader, labels: Sequence[str] = ()) -> Declared:
    """A value that goes up and down (a level, a window average, a setting)."""
    return Declared("gauge", name, help, read, tuple(labels))


def by_label(values: Mapping[str, float | None] | None) -> dict[tuple[str, ...], float | None]:
    """``{"a": 1}`` -> ``{("a",): 1}``: a one-label family from a mapping."""
    return {(str(k),): v for k, v in (values or {}).items()}


def state_samples(current: str, states: Iterable[str]) -> dict[tuple[str, ...], float]:
    """An enum as a gauge: 1 for the current state, 0 for every other (so no series vanishes)."""
    return {(str(s),): float(str(s) == str(current)) for s in states}


class DeclaredCollector:
    """Yields a process's declared families from its snapshot, taken once per scrape."""

    def __init__(self, declared: Sequence[Declared], snapshot: Callable[[], Any]) -> None:
        names = [d.name for d in declared]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise MetricDeclarationError(f"metrics declared twice: {duplicates}")
        self.declared = tuple(declared)
        self._snapshot = snapshot

    def describe(self) -> Iterator[Any]:
        for declared in self.declared:
            yield declared.family(None)

    def collect(self) -> Iterator[Any]:
        snapshot = self._snapshot()
        for declared in self.declared:
            yield declared.family(snapshot)


def histogram(
    name: str, help: str, labels: Sequence[str] = (), buckets: Sequence[float] = ()
) -> Any:
    """A ``prometheus_client`` Histogram, not registered anywhere yet (the app's lifespan puts it
    in the app's own registry), with its name checked like every declared family."""
    from prometheus_client import Histogram

    check_name(name, "histogram", labels)
    return Histogram(name, help, labelnames=list(labels), buckets=list(buckets), registry=None)


__all__ = [
    "LATENCY_BUCKETS_SECONDS",
    "SIZE_BUCKETS_BYTES",
    "Declared",
    "DeclaredCollector",
    "MetricDeclarationError",
    "by_label",
    "check_name",
    "counter",
    "gauge",
    "histogram",
    "state_samples",
]
