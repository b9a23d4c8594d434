"""ralph-wiggum: the orchestrator service (task API, the loop, durable state)."""
