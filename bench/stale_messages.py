"""How long a Celery training worker takes to drop N messages for jobs that cannot be
claimed (duplicates, stale redeliveries, jobs cancelled before they ran): with the
worker of this checkout, or of another one (`--checkout`, e.g. an older commit, to show
the before). Needs a migrated Postgres database and a Redis broker used by nothing
else, given as FTSVC_DATABASE_URL and FTSVC_BROKER_URL.

    FTSVC_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/ftsvc_test \\
    FTSVC_BROKER_URL=redis://127.0.0.1:6379/13 python bench/stale_messages.py --messages 60 --checkout /old/tree
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pending(broker: redis.Redis, queue: str) -> bool:
    """Messages still queued or unacknowledged (a Redis busy with other work may time a
    read out: that counts as still pending)."""
    try:
        return bool(broker.llen(queue) or broker.hlen("unacked"))
    except redis.TimeoutError:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the tree whose worker runs")
    args = parser.parse_args()

    from core.queue import enqueue_job, get_celery
    from core.settings import get_settings

    settings = get_settings()
    broker = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    broker.flushdb()
    checkout = args.checkout.resolve()
    worker = subprocess.Popen(
        [sys.executable, "-m", "ftsvc.cli", "worker"],
        cwd=checkout,
        env=os.environ | {"PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not get_celery().control.ping(timeout=0.5):
            assert worker.poll() is None, "the worker did not start"
        started = time.monotonic()
        for number in range(args.messages):
            enqueue_job(f"ftjob-stale-{number}")  # no such job: not claimable
        while _pending(broker, settings.training_queue):
            time.sleep(0.05)
        took = time.monotonic() - started
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    print(
        f"{args.messages} stale messages drained in {took:.1f} s ({took / args.messages * 1000:.0f} ms each), "
        f"worker of {checkout}"
    )


if __name__ == "__main__":
    main()
