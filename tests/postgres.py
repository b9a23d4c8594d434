"""A real PostgreSQL server for the tests: Debian's `postgresql` package, `initdb` + `pg_ctl` in a
temp dir, on a free loopback port, with its socket in that dir too. Tests run as root and the
server refuses to, so as root it runs as the `postgres` user the package creates."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

from support import free_port, missing

SERVER_USER = "postgres"


def bindir() -> Path | None:
    """Where initdb and pg_ctl lie: not on PATH on Debian; pg_config knows, else the newest version's."""
    pg_config = shutil.which("pg_config")
    said = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip() if pg_config else ""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for found in ([Path(said)] if said else []) + versions[::-1]:
        if (found / "initdb").is_file() and (found / "pg_ctl").is_file():
            return found
    return None


class PostgresServer:
    """One server; `database()` hands each test a fresh database, as a plain libpq URL."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="aistack-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(8)  # the tests look for it where it must not appear
        self._count = 0

    def _as_server_user(self, *argv: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        done = self._as_server_user(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--pwfile", str(password_file),
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr}")
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server (again, after `stop`), on the same port and data."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=300"
        done = self._as_server_user(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start"
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}{self.log()}")
        return self

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        self._count += 1
        name = f"t{self._count}_{secrets.token_hex(3)}"
        admin = create_engine(self.url().replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as db:
                db.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def stop(self) -> None:
        """As a crash does: every connection cut at once."""
        self._as_server_user(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def start_server() -> PostgresServer:
    """The suite's server, or the test fails (`make test`) or skips without the package."""
    found = bindir()
    if found is None:
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/setup.sh --test does)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            missing(f"PostgreSQL refuses to run as root, and there is no {SERVER_USER!r} user to run it as")
    return PostgresServer(found).start()
