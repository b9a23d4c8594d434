"""What the lifecycle knows about a service — the uptime and release of its process, its last
deploy — for the Overview and Deploy pages. Read-only, from files: call it off the event loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aistack import services
from aistack.config import Settings
from aistack.lifecycle.deploy import read_history
from aistack.lifecycle.runtimes.process import ProcessRuntime

log = logging.getLogger("aistack.dashboard")


@dataclass
class ServiceFacts:
    uptime_seconds: float | None = None
    release: str | None = None
    last_deploy: dict[str, Any] | None = None  # one entry of the lifecycle's deploy history


def service_facts(settings: Settings) -> dict[str, ServiceFacts]:
    """Every service's facts: one read of the deploy history, one of each pid file."""
    facts = {name: ServiceFacts() for name in services.NAMES}
    try:
        for entry in read_history(settings, limit=None):  # oldest first: the last one per service stays
            if (service := facts.get(entry.get("service", ""))) is not None:
                service.last_deploy = entry
        runtime = ProcessRuntime(settings)
        for name, service in facts.items():
            if (record := runtime.running(name, prune=False)) is not None:
                service.uptime_seconds, service.release = record.uptime(), record.release
    except Exception:  # the lifecycle's files are its own; a surprise there must not break a page
        log.debug("lifecycle facts unreadable", exc_info=True)
    return facts
