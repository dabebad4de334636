"""The training workers and their devices, as they advertise themselves: a row per
Celery worker process on the training queues, written when it starts, renewed by its
heartbeat (worker.heartbeat.WorkerHeartbeat) and removed when it stops. A worker not
heard from for FTSVC_WORKER_LIVENESS_SECONDS (killed, its host gone) is not live, and
its row stays until it comes back under the same name. Routing (core.routing) reads
who is live; so can an operator's metrics (`live_workers`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.models import Worker
from core.settings import get_settings
from core.transitions import rows_matched


@dataclass(frozen=True)
class Device:
    index: int  # as CUDA numbers it on the worker's host (what CUDA_VISIBLE_DEVICES takes)
    name: str
    memory_bytes: int


@dataclass(frozen=True)
class Inventory:
    """What a worker has to run jobs on: its GPUs (none on a CPU worker) and its RAM."""

    gpus: tuple[Device, ...]
    host_memory_bytes: int

    @property
    def gpu_memory_bytes(self) -> int:
        """The memory every one of its GPUs has (a job may get any of them); 0 without GPUs."""
        return min((d.memory_bytes for d in self.gpus), default=0)


@dataclass(frozen=True)
class LiveWorker:
    name: str
    hostname: str
    queues: tuple[str, ...]
    inventory: Inventory
    heartbeat_at: float


def advertise(session: Session, name: str, hostname: str, queues: list[str], inventory: Inventory) -> None:
    """Write (or rewrite, for a worker that restarted under its name) the worker's row."""
    now = time.time()
    session.merge(
        Worker(
            name=name,
            hostname=hostname,
            training_queue=get_settings().training_queue,
            queues=queues,
            devices=[{"index": d.index, "name": d.name, "memory_bytes": d.memory_bytes} for d in inventory.gpus],
            gpus=len(inventory.gpus),
            gpu_memory_bytes=inventory.gpu_memory_bytes,
            host_memory_bytes=inventory.host_memory_bytes,
            started_at=now,
            heartbeat_at=now,
        )
    )


def beat(session: Session, name: str) -> bool:
    """Renew the worker's heartbeat; False when its row is gone (then advertise again)."""
    return rows_matched(session, update(Worker).where(Worker.name == name).values(heartbeat_at=time.time())) > 0


def withdraw(session: Session, name: str) -> None:
    """A stopping worker is not live from now on."""
    session.execute(delete(Worker).where(Worker.name == name))


def live_workers(session: Session) -> list[LiveWorker]:
    """The training workers of this service (its training queue) heard from within the
    liveness timeout, by name."""
    settings = get_settings()
    since = time.time() - settings.worker_liveness_seconds
    stmt = (
        select(Worker)
        .where(Worker.training_queue == settings.training_queue, Worker.heartbeat_at >= since)
        .order_by(Worker.name)
    )
    return [
        LiveWorker(
            row.name,
            row.hostname,
            tuple(row.queues),
            Inventory(
                tuple(Device(d["index"], d["name"], d["memory_bytes"]) for d in row.devices), row.host_memory_bytes
            ),
            row.heartbeat_at,
        )
        for row in session.scalars(stmt)
    ]
