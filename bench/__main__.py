"""`python -m bench [--quick]`: start the stack on dedicated servers, run every scenario, print the
table and write the JSON file. See README "Performance"."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import traceback
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (under 2 minutes)")
    parser.add_argument("--port", type=int, default=8120, help="port of the benchmark's own web server")
    parser.add_argument("--data-dir", default=str(BASE_DIR / ".data" / "bench"), help="embedded servers' folder")
    parser.add_argument("--output", default="bench-results.json", help="where the JSON results go")
    parser.add_argument(
        "--max-events",
        type=int,
        default=None,
        help="largest stored history of scenario 6: 10^4, 10^6 or 10^7 (default 10^6 quick, 10^7 full)",
    )
    return parser.parse_args(argv)


def configure_environment(args: argparse.Namespace) -> None:
    # The benchmark bulk-loads and truncates tables, so it never touches a configured database: it
    # always runs on embedded servers of its own under --data-dir.
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "COUNTER_DATA_DIR": args.data_dir,
            "DJANGO_SETTINGS_MODULE": "counterproject.settings",
            "BENCHMARK_ENDPOINTS": "true",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
        }
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_environment(args)
    import django

    django.setup()
    from django.db import connection

    from bench import load, report, scenarios, stack
    from counterproject.redis_client import get_redis

    began = time.monotonic()
    print(f"benchmark ({'quick' if args.quick else 'full'}): servers under {args.data_dir}", flush=True)
    stack.reset_data()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres_version = cursor.fetchone()[0]
    machine = report.machine(postgres_version, get_redis().info("server")["redis_version"])
    largest = args.max_events or (10**6 if args.quick else 10**7)
    levels = [level for level in (10**4, 10**6, 10**7) if level <= largest]
    web = stack.Stack(args.port)
    bench = scenarios.Bench(web, quick=args.quick)
    failures = []
    steps = [
        ("rollup throughput", lambda: scenarios.rollup_throughput(bench)),
        ("scale of cost", lambda: scenarios.scale_of_cost(bench, levels)),
        ("queue memory", lambda: scenarios.queue_memory(bench)),
    ]
    if load.available():
        steps = [
            ("HTTP floor", lambda: scenarios.http_floor(bench)),
            ("batch ingestion", lambda: scenarios.batch_ingestion(bench)),
            ("hot counter", lambda: scenarios.hot_counter(bench)),
            ("convergence", lambda: scenarios.convergence(bench)),
            *steps,
        ]
    else:
        print("wrk is not installed: HTTP scenarios (1, 2, 3, 5) are skipped; `apt-get install wrk` adds them.")
        failures.append("wrk missing: HTTP scenarios skipped")
    sampler = scenarios.RssSampler(web)
    try:
        web.start()
        sampler.start()
        scenarios.setup_key(bench)
        for name, step in steps:
            started = time.monotonic()
            print(f"- {name} ...", end="", flush=True)
            try:
                step()
                print(f" {time.monotonic() - started:.0f} s", flush=True)
            except Exception:  # noqa: BLE001 - one broken scenario must not hide the others' figures
                print(" FAILED", flush=True)
                traceback.print_exc()
                failures.append(f"{name}: {traceback.format_exc(limit=1).strip().splitlines()[-1]}")
        sampler.report(bench)
    finally:
        web.stop()
        stack.stop_servers()
    elapsed = time.monotonic() - began
    print()
    print(report.table(bench.checks))
    print()
    print(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; PostgreSQL {postgres_version}, "
        f"Redis {machine['redis']}; {elapsed:.0f} s"
    )
    for failure in failures:
        print(f"not measured: {failure}")
    document = {
        "mode": "quick" if args.quick else "full",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(),
        "seconds": round(elapsed, 1),
        "machine": machine,
        "results": bench.results,
        "failures": failures,
    }
    report.write_json(Path(args.output), document, bench.checks)
    print(f"results written to {args.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
