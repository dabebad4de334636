"""Experiment trackers a job asked for (`integrations`, OpenAI's field): Weights & Biases
through transformers' own WandbCallback, on a run this module starts with the job's
settings. A tracker is a convenience, never a reason to fail: when the worker cannot
report to it (no API key in its environment, W&B unreachable), the job trains anyway
and a warning event says why.

The W&B run's id is the job's id and it is resumed when it exists, so the attempts of a
job that resumed after a lost worker or a pause report to one run. The API key is the
worker's `WANDB_API_KEY` (W&B's other settings too: `WANDB_BASE_URL` for a self-hosted
server, `WANDB_INIT_TIMEOUT` for how long to try to reach it, 90 s by default)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from core.specs import ResolvedSpec, WandbIntegration
from worker.training.reporting import Reporter


def _start_wandb(job_id: str, spec: ResolvedSpec, settings: WandbIntegration, reporter: Reporter, workdir: Path) -> Any:
    """The W&B run, or None (and a warning event) when it cannot be started."""
    try:
        import wandb

        run = wandb.init(
            project=settings.project,
            entity=settings.entity,
            name=settings.name or job_id,
            tags=[*settings.tags, "ftsvc/finetune", f"ftsvc/{job_id}"],
            id=job_id,
            resume="allow",
            dir=str(workdir),
            config={"ftsvc": spec.model_dump(mode="json")},
        )
    except Exception as exc:  # whatever W&B raises (no key, unreachable, refused): report and train
        reporter.event(
            f"Not reporting to Weights & Biases: {str(exc).rstrip('.')}. The job trains without it "
            "(the worker reads its W&B key from WANDB_API_KEY)",
            level="warn",
            data={"integration": "wandb", "error": type(exc).__name__},
        )
        return None
    reporter.event(
        f"Reporting to Weights & Biases: run {run.url}",
        data={"integration": "wandb", "url": run.url, "project": settings.project, "run_id": run.id},
    )
    return run


@contextmanager
def tracking_callbacks(
    job_id: str, spec: ResolvedSpec, reporter: Reporter, workdir: Path
) -> Iterator[tuple[TrainerCallback, ...]]:
    """The trainer callbacks of the job's integrations, for the duration of its training;
    the W&B run is finished after it (exit code 1 when training raised)."""
    wandb_settings = next((i.wandb for i in spec.integrations if i.type == "wandb"), None)
    run = _start_wandb(job_id, spec, wandb_settings, reporter, workdir) if wandb_settings else None
    if run is None:
        yield ()
        return
    from transformers.integrations.integration_utils import WandbCallback

    failed = True
    try:
        yield (WandbCallback(),)
        failed = False
    finally:
        try:
            run.finish(exit_code=1 if failed else 0)
        except Exception as exc:  # the job's outcome does not depend on its tracker
            reporter.event(f"Weights & Biases did not finish the run: {exc}", level="warn")
