"""gunicorn settings of `make run`; WEB_PORT (or PORT), WEB_WORKERS and WEB_THREADS override."""

import os

# honcho overwrites PORT for every process it starts, so the Makefile passes WEB_PORT.
bind = f"0.0.0.0:{os.environ.get('WEB_PORT') or os.environ.get('PORT', '8000')}"
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
