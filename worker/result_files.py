"""The result files a succeeded job publishes beside its adapter, each written from the
metrics the job recorded (core.events), so that every file holds exactly what
`GET /v1/fine_tuning/jobs/{id}/metrics` answers, the whole curve of a job that resumed
on another worker included:

- `step_metrics.csv`: OpenAI's results file (step, train and validation loss and token
  accuracy);
- `tensorboard.tar.gz`: a TensorBoard log directory (one tfevents file, written by
  tensorboardX) with a scalar per metric and split (`train/loss`, `valid/loss`, ...) at
  its step and wall time; `tar xzf` it and point `tensorboard --logdir` at it;
- `mlflow_metrics.csv`: one row per value in the fields of MLflow's metric records
  (`key, value, timestamp, step`, timestamp in milliseconds: what MLflow's
  `metrics/get-history` answers and `mlflow.entities.Metric` takes), with the same keys,
  to load into an MLflow run with `MlflowClient().log_batch`.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tensorboardX import SummaryWriter

from core.models import JobMetric
from core.storage import ObjectStore, StoredObject
from worker.archives import archive

STEP_METRICS_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")
# The columns of a metrics point that are series (all but its step, split and time).
SERIES = (
    "loss",
    "learning_rate",
    "grad_norm",
    "mean_token_accuracy",
    "tokens_per_second",
    "tokens_seen",
    "trained_tokens",
    "epoch",
    "rewards_chosen",
    "rewards_rejected",
    "rewards_margins",
    "rewards_accuracies",
)


def values(points: Sequence[JobMetric]) -> Iterator[tuple[str, float, int, int]]:
    """Every recorded value as (key, value, step, Unix seconds); the key is
    `<split>/<column>`, as TensorBoard groups tags by their prefix."""
    for point in points:
        for column in SERIES:
            value = getattr(point, column)
            if value is not None:
                yield f"{point.split}/{column}", float(value), point.step, point.created_at


def write_csv(storage: ObjectStore, key: str, header: Sequence[str], rows: Iterator[Sequence[object]]) -> StoredObject:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    with storage.writer(key) as out:
        out.write(text.getvalue().encode())
    return StoredObject(key, out.bytes, out.sha256)


def step_metrics(storage: ObjectStore, key: str, points: Sequence[JobMetric]) -> StoredObject:
    rows: dict[int, dict[str, object]] = {}
    for m in points:
        row = rows.setdefault(m.step, {"step": m.step})
        row[f"{m.split}_loss"] = m.loss
        row[f"{m.split}_mean_token_accuracy"] = m.mean_token_accuracy
    table = ([rows[step].get(column) for column in STEP_METRICS_COLUMNS] for step in sorted(rows))
    return write_csv(storage, key, STEP_METRICS_COLUMNS, table)


def mlflow_metrics(storage: ObjectStore, key: str, points: Sequence[JobMetric]) -> StoredObject:
    rows = ((name, value, seconds * 1000, step) for name, value, step, seconds in values(points))
    return write_csv(storage, key, ("key", "value", "timestamp", "step"), rows)


def tensorboard_events(storage: ObjectStore, key: str, points: Sequence[JobMetric]) -> StoredObject:
    with tempfile.TemporaryDirectory(prefix="tensorboard-") as logdir:
        writer = SummaryWriter(logdir=logdir)
        try:
            for name, value, step, seconds in values(points):
                writer.add_scalar(name, value, global_step=step, walltime=seconds)
        finally:
            writer.close()
        return archive(storage, key, Path(logdir).iterdir())


# Each result file: its name and how it is written from the job's metrics points.
RESULT_FILES: tuple[tuple[str, Callable[[ObjectStore, str, Sequence[JobMetric]], StoredObject]], ...] = (
    ("step_metrics.csv", step_metrics),  # first: OpenAI's results file
    ("tensorboard.tar.gz", tensorboard_events),
    ("mlflow_metrics.csv", mlflow_metrics),
)
