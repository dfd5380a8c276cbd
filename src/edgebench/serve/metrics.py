"""Prometheus metrics of one gateway (its own registry: two gateways in one process never clash).

Counters and histograms are updated per request; the pool's state (models loaded, their charge,
queue depth, starts) is read at scrape time by a collector, so it is never stale.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgebench.serve.pool import ModelState, Pool

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2, 4)


class _PoolCollector(Collector):
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "edgebench_model_state", "1 for the state each model is in", labels=["model", "state"]
        )
        mem = GaugeMetricFamily(
            "edgebench_model_memory_mib", "what a model is charged in the budget", labels=["model", "source"]
        )
        queue = GaugeMetricFamily("edgebench_queue_depth", "requests waiting for a slot", labels=["model"])
        active = GaugeMetricFamily("edgebench_requests_in_flight", "requests running", labels=["model"])
        starts = GaugeMetricFamily("edgebench_model_starts", "llama-server starts", labels=["model"])
        tg = GaugeMetricFamily(
            "edgebench_model_tg_tokens_per_second",
            "decode speed the predictions use",
            labels=["model", "source"],
        )
        for name, s in self._pool.slots.items():
            for st in ModelState:
                state.add_metric([name, st.value], 1.0 if s.state == st else 0.0)
            if s.resident and s.charge is not None:
                mem.add_metric([name, s.charge.source], s.charge.mib)
            queue.add_metric([name], self._pool.queued(name))
            active.add_metric([name], s.active)
            starts.add_metric([name], s.starts)
            if s.speed.tg_ts:
                tg.add_metric([name, s.speed.source], s.speed.tg_ts)
        budget = GaugeMetricFamily("edgebench_memory_budget_mib", "the memory budget (0: none)")
        budget.add_metric([], self._pool.budget_mib or 0.0)
        used = GaugeMetricFamily("edgebench_memory_used_mib", "charged by loaded and loading models")
        used.add_metric([], self._pool.used_mib())
        yield from (state, mem, queue, active, starts, tg, budget, used)


class Metrics:
    def __init__(self, pool: Pool) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgebench_requests",
            "requests by model, route kind and status class",
            ["model", "route", "status"],
            registry=r,
        )
        self.errors = Counter("edgebench_errors", "errors by class", ["model", "cls"], registry=r)
        self.ttft = Histogram(
            "edgebench_ttft_seconds",
            "time to the first streamed byte",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "edgebench_request_seconds", "request duration", ["model"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.tokens_per_s = Gauge(
            "edgebench_decode_tokens_per_second",
            "llama-server's decode speed on the last request",
            ["model"],
            registry=r,
        )
        self.predicted = Histogram(
            "edgebench_predicted_seconds",
            "predicted latency",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction_ratio = Histogram(
            "edgebench_latency_measured_over_predicted",
            "measured ÷ predicted latency",
            ["model"],
            buckets=_RATIO_BUCKETS,
            registry=r,
        )
        self.evictions = Counter("edgebench_evictions", "models evicted to make room", ["model"], registry=r)
        self.fallbacks = Counter(
            "edgebench_fallbacks", "requests moved to the backup", ["from_model", "to_model"], registry=r
        )
        r.register(_PoolCollector(pool))
