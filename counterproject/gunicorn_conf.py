"""gunicorn settings of `make run`; WEB_HOST, WEB_PORT (or PORT), WEB_WORKERS and WEB_THREADS override."""

import os

# Loopback unless told: the defaults (dev SECRET_KEY, /metrics without a token) are not fit to face
# a network, so exposing the service takes an explicit WEB_HOST=0.0.0.0.
_host = os.environ.get("WEB_HOST") or "127.0.0.1"
# honcho overwrites PORT for every process it starts, so the Makefile passes WEB_PORT.
_port = os.environ.get("WEB_PORT") or os.environ.get("PORT", "8000")
bind = f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "8"))
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
