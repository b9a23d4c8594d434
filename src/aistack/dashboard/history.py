"""What the lifecycle knows about a service — uptime of its process, restarts, the last deploy —
for the Overview and Deploy pages. Read-only; any piece the lifecycle does not provide is None."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aistack.config import Settings

log = logging.getLogger("aistack.dashboard")


@dataclass
class ServiceFacts:
    uptime_seconds: float | None = None
    restarts: int | None = None
    release: str | None = None
    last_deploy: dict[str, Any] | None = None  # one entry of the lifecycle's deploy history


def service_facts(settings: Settings, service: str) -> ServiceFacts:
    facts = ServiceFacts()
    try:
        from aistack.lifecycle.deploy import read_history

        entries = read_history(settings, service, limit=1)
        facts.last_deploy = entries[-1] if entries else None
    except ImportError:
        pass
    except Exception:  # the lifecycle's files are its own; a surprise there must not break a page
        log.debug("deploy history unreadable", exc_info=True)
    try:
        from aistack.lifecycle.process import ProcessRuntime

        record = ProcessRuntime(settings).running(service, prune=False)
        if record is not None:
            facts.uptime_seconds = record.uptime()
            facts.release = getattr(record, "release", None)
            facts.restarts = getattr(record, "restarts", None)
    except ImportError:
        pass
    except Exception:
        log.debug("process record unreadable", exc_info=True)
    return facts
