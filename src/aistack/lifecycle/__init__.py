"""Stack lifecycle: start, stop, check, deploy and roll back the services (process or podman runtime)."""
