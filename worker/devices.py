"""What a training worker has to run jobs on, found without importing torch (the
Celery worker process stays light): its GPUs through nvidia-smi, only those that
CUDA_VISIBLE_DEVICES leaves it, or those FTSVC_WORKER_DEVICES describes; and its RAM
(the container's memory limit when lower than the host's)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from core.memory_estimate import GIB
from core.settings import get_settings
from core.worker_registry import Device, Inventory

log = logging.getLogger("ftsvc.worker")
CGROUP_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory.max")


def host_memory_bytes() -> int:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_MEMORY_LIMIT.read_text().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def _visible(gpus: list[tuple[Device, str]]) -> list[Device]:
    """The GPUs CUDA_VISIBLE_DEVICES (indices or UUIDs) leaves this worker, all if unset."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [device for device, _ in gpus]
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    return [device for device, uuid in gpus if str(device.index) in wanted or uuid in wanted]


def nvidia_gpus() -> list[Device]:
    """The host's GPUs as the driver lists them; none without nvidia-smi or a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = [smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s): advertising no GPU", exc)
        return []
    gpus = []
    for line in lines:
        index, uuid, name, mib = (field.strip() for field in line.split(","))
        gpus.append((Device(int(index), name, int(float(mib)) << 20), uuid))
    return _visible(gpus)


def discover() -> Inventory:
    configured = get_settings().worker_devices
    if configured is not None:
        gpus = [Device(i, d.name, int(d.memory_gib * GIB)) for i, d in enumerate(configured)]
    else:
        gpus = nvidia_gpus()
    return Inventory(tuple(gpus), host_memory_bytes())
