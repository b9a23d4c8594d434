"""What the lifecycle knows about a service — the uptime and release of its process, its last
deploy — for the Overview and Deploy pages. Read-only, from files: call it off the event loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aistack.config import Settings
from aistack.lifecycle.deploy import read_history
from aistack.lifecycle.runtimes.process import ProcessRuntime

log = logging.getLogger("aistack.dashboard")


@dataclass
class ServiceFacts:
    uptime_seconds: float | None = None
    release: str | None = None
    last_deploy: dict[str, Any] | None = None  # one entry of the lifecycle's deploy history


def service_facts(settings: Settings, service: str) -> ServiceFacts:
    facts = ServiceFacts()
    try:
        entries = read_history(settings, service, limit=1)
        facts.last_deploy = entries[-1] if entries else None
        record = ProcessRuntime(settings).running(service, prune=False)
        if record is not None:
            facts.uptime_seconds, facts.release = record.uptime(), record.release
    except Exception:  # the lifecycle's files are its own; a surprise there must not break a page
        log.debug("lifecycle facts unreadable", exc_info=True)
    return facts
