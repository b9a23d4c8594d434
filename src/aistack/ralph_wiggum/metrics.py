"""Prometheus metrics, computed from the database at scrape time so they survive restarts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from aistack.ralph_wiggum.store import Store


class StoreCollector(Collector):
    def __init__(self, store: Store, active: Callable[[], int]):
        self.store, self.active = store, active

    def collect(self):
        tasks = GaugeMetricFamily("aistack_tasks", "Tasks by status and backend", labels=["status", "backend"])
        iterations = CounterMetricFamily("aistack_iterations", "Finished iterations", labels=["backend", "status"])
        seconds = CounterMetricFamily("aistack_iteration_seconds", "Time spent in iterations", labels=["backend"])
        tokens = CounterMetricFamily("aistack_tokens", "LLM tokens used", labels=["kind"])
        by_task, per_iteration = self.store.metric_rows()
        for task_status, backend, n in by_task:
            tasks.add_metric([task_status, backend], n)
        per_backend: dict[str, float] = {}
        prompt_total = completion_total = 0
        for backend, status, n, secs, p, c in per_iteration:
            iterations.add_metric([backend, status or "unknown"], n)
            per_backend[backend] = per_backend.get(backend, 0.0) + float(secs)
            prompt_total += int(p)
            completion_total += int(c)
        for backend, secs in per_backend.items():
            seconds.add_metric([backend], secs)
        tokens.add_metric(["prompt"], prompt_total)
        tokens.add_metric(["completion"], completion_total)
        active = GaugeMetricFamily("aistack_active_tasks", "Tasks being driven by this orchestrator now")
        active.add_metric([], self.active())
        yield from (tasks, iterations, seconds, tokens, active)


def registry_for(store: Store, active: Callable[[], int]) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store, active))
    return registry
