"""Prometheus metrics, computed from the database at scrape time so they survive restarts."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select

from aistack.ralph_wiggum.store import Iteration, Store, Task


class StoreCollector(Collector):
    def __init__(self, store: Store, active: Callable[[], int]):
        self.store, self.active = store, active

    def collect(self):
        tasks = GaugeMetricFamily("aistack_tasks", "Tasks by status and backend", labels=["status", "backend"])
        iterations = CounterMetricFamily("aistack_iterations", "Finished iterations", labels=["backend", "status"])
        seconds = CounterMetricFamily("aistack_iteration_seconds", "Time spent in iterations", labels=["backend"])
        tokens = CounterMetricFamily("aistack_tokens", "LLM tokens used", labels=["kind"])
        with self.store.session() as s:
            for status, backend, n in s.execute(select(Task.status, Task.backend, func.count()).group_by(Task.status, Task.backend)):
                tasks.add_metric([status, backend], n)
            rows = s.execute(
                select(Task.backend, Iteration.status, func.count(), func.coalesce(func.sum(Iteration.duration_seconds), 0.0),
                       func.coalesce(func.sum(Iteration.prompt_tokens), 0), func.coalesce(func.sum(Iteration.completion_tokens), 0))
                .join(Task, Task.id == Iteration.task_id)
                .group_by(Task.backend, Iteration.status)
            )
            per_backend: dict[str, float] = {}
            prompt_total = completion_total = 0
            for backend, status, n, secs, p, c in rows:
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
