"""The embedded PostgreSQL and Redis that `make run` and `make test` use on a bare machine."""

import os
import subprocess
import sys

from counterproject import embedded


def run_module(data_dir, *args) -> str:
    env = {**os.environ, "COUNTER_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=180, check=True)
    return result.stdout.strip()


def test_stop_stops_both_servers_and_never_starts_one(tmp_path):
    assert run_module(tmp_path, "-m", "counterproject.embedded", "stop") == "stopped: nothing was running"
    assert not (tmp_path / "postgres").exists()
    start = "from counterproject import embedded; embedded.ensure_postgres(); print(embedded.ensure_redis())"
    assert run_module(tmp_path, "-c", start) == f"unix://{tmp_path / 'redis' / 'redis.sock'}"
    assert run_module(tmp_path, "-m", "counterproject.embedded", "stop") == "stopped: redis, postgres"
    assert run_module(tmp_path, "-m", "counterproject.embedded", "stop") == "stopped: nothing was running"
    assert not embedded._postgres_running(tmp_path / "postgres")
