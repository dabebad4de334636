"""The inference servers the API can send a generation to: each records itself here and
renews its row as a heartbeat (worker.inference.server); a row silent for
`inference_dead_seconds` is a server that is gone."""

from __future__ import annotations

import random
import time

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.models import InferenceServer
from core.settings import get_settings


def heartbeat(
    session: Session, url: str, device: str, device_name: str, memory_bytes: int, loaded: list[str], started_at: float
) -> None:
    """Record the server at `url` as alive now, with the base models it holds (a server
    started again at the same URL takes the row over)."""
    row = session.scalar(select(InferenceServer).where(InferenceServer.url == url))
    if row is None:
        row = InferenceServer(url=url)
        session.add(row)
    row.device, row.device_name, row.memory_bytes = device, device_name, memory_bytes
    row.loaded_bases, row.started_at, row.heartbeat_at = loaded, started_at, time.time()


def remove(session: Session, url: str) -> None:
    session.execute(delete(InferenceServer).where(InferenceServer.url == url))


def live(session: Session) -> list[InferenceServer]:
    since = time.time() - get_settings().inference_dead_seconds
    return list(session.scalars(select(InferenceServer).where(InferenceServer.heartbeat_at >= since)))


def candidates(session: Session, base_key: str) -> list[str]:
    """The URLs of live servers to try, in order: those that hold the base already, then
    the others (each group shuffled, to spread the load)."""
    servers = live(session)
    random.shuffle(servers)
    servers.sort(key=lambda server: base_key not in server.loaded_bases)
    return [server.url for server in servers]
