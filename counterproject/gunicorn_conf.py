"""gunicorn settings of `make run`; WEB_HOST, WEB_PORT (or PORT), WEB_WORKERS and WEB_THREADS override."""

import os

# Loopback unless told: the defaults (dev SECRET_KEY, /metrics without a token) are not fit to face
# a network, so exposing the service takes an explicit WEB_HOST=0.0.0.0.
_host = os.environ.get("WEB_HOST") or "127.0.0.1"
# honcho overwrites PORT for every process it starts, so the Makefile passes WEB_PORT.
_port = os.environ.get("WEB_PORT") or os.environ.get("PORT", "8000")
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
# Two processes per core: with 2 processes x 8 threads, wrk's 16 keep-alive connections often
# landed unevenly and one process's GIL capped the no-op endpoint near 850 req/s; 4 x 4 served
# it at 1,700 and paced adds with a lower p99 (13 vs 16-25 ms at 400 req/s), same machine.
workers = int(os.environ.get("WEB_WORKERS", "4"))
threads = int(os.environ.get("WEB_THREADS", "4"))
# Threads share one DB connection per thread; requests are short, so a small backlog queue is fine.
timeout = 30
graceful_timeout = 10
accesslog = os.environ.get("WEB_ACCESS_LOG") or None
control_socket_disable = True


def child_exit(server, worker):
    # Per-process metric files of a dead worker must be merged away (prometheus_client multiprocess).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
