"""`ftsvc jobs`: create fine-tuning jobs (from flags, a JSON or YAML spec, or both: the
flags win), list and show them, follow one live, cancel, pause and resume."""

from __future__ import annotations

import copy
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.filesize import decimal

from ftsvc.client.api import Api, endpoint
from ftsvc.client.errors import ClientError
from ftsvc.client.files import upload
from ftsvc.client.options import ApiKey, BaseUrl, Json, Quiet, connect
from ftsvc.client.output import err, figure, out, rows, table, when
from ftsvc.client.watch import duration, watch

app = typer.Typer(help="Fine-tuning jobs: create, list, show, watch, cancel, pause, resume.", no_args_is_help=False)

JobId = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id (ftjob-...)", show_default=False)]


class MethodType(StrEnum):
    supervised = "supervised"
    dpo = "dpo"


def read_spec(path: Path) -> dict[str, Any]:
    """A job spec file: JSON (.json) or YAML (anything else), holding an object."""
    try:
        text = path.read_text()
        spec = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise ClientError(f"cannot read the spec {path}: {reason}") from exc
    if not isinstance(spec, dict):
        raise ClientError(f"the spec {path} must hold an object (the job's fields), not {type(spec).__name__}")
    return spec


def put(spec: dict[str, Any], where: tuple[str, ...], value: Any) -> None:
    """Set a nested field of the spec, making the objects on the way."""
    node = spec
    for depth, key in enumerate(where[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ClientError(f"the spec's {'.'.join(where[: depth + 1])} must be an object to set {'.'.join(where)}")
    node[where[-1]] = value


def job_spec(
    spec: dict[str, Any], flags: dict[tuple[str, ...], Any], hyperparameters: dict[str, Any]
) -> dict[str, Any]:
    """The spec with the flags given on top; `hyperparameters` go to the method's own
    (`method.<type>.hyperparameters`, the type from the flags, else the spec)."""
    merged: dict[str, Any] = copy.deepcopy(spec)
    for where, value in flags.items():
        if value is not None:
            put(merged, where, value)
    method = merged.get("method")
    kind = str(method.get("type", "supervised")) if isinstance(method, dict) else "supervised"
    for name, value in hyperparameters.items():
        if value is not None:
            put(merged, ("method", kind, "hyperparameters", name), value)
    return merged


def metadata_pairs(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--metadata")
        found[key] = value
    return found


def file_reference(api: Api, value: str | None) -> str | None:
    """A file id as given, or the id of a local file uploaded now."""
    if value is None or not Path(value).is_file():
        return value
    file = upload(api, Path(value))
    err.print(f"uploaded {value} as {file['id']} ({file['examples']} examples)")
    return str(file["id"])


@app.command("create")
def create_command(
    model: Annotated[str | None, typer.Option("--model", "-m", help="The base model", show_default=False)] = None,
    training_file: Annotated[
        str | None, typer.Option("--training-file", "-t", help="A file id, or a local file to upload first")
    ] = None,
    validation_file: Annotated[
        str | None, typer.Option("--validation-file", help="A file id, or a local file to upload first")
    ] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name")] = None,
    method: Annotated[MethodType | None, typer.Option(help="The training method")] = None,
    n_epochs: Annotated[int | None, typer.Option("--n-epochs", help="Epochs (default: auto)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per batch (default: auto)")] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(help="OpenAI's multiplier")] = None,
    beta: Annotated[float | None, typer.Option(help="DPO's beta")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="qlora.training.learning_rate")] = None,
    max_steps: Annotated[int | None, typer.Option(help="qlora.training.max_steps")] = None,
    seed: Annotated[int | None, typer.Option(help="The training seed")] = None,
    metadata: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="Job metadata, repeatable")] = None,
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help="A job spec, JSON or YAML; the flags override its fields")
    ] = None,
    then_watch: Annotated[bool, typer.Option("--watch", help="Then follow it as `jobs watch` does")] = False,
    quiet: Quiet = False,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a fine-tuning job: from flags, a spec file, or both."""
    spec = read_spec(spec_file) if spec_file else {}
    with connect(base_url, api_key) as api:
        flags: dict[tuple[str, ...], Any] = {
            ("model",): model,
            ("training_file",): file_reference(api, training_file),
            ("validation_file",): file_reference(api, validation_file),
            ("suffix",): suffix,
            ("seed",): seed,
            ("method", "type"): method.value if method else None,
            ("qlora", "training", "learning_rate"): learning_rate,
            ("qlora", "training", "max_steps"): max_steps,
        }
        for key, value in metadata_pairs(metadata or []).items():
            flags[("metadata", key)] = value
        hyperparameters = {
            "n_epochs": n_epochs,
            "batch_size": batch_size,
            "learning_rate_multiplier": learning_rate_multiplier,
            "beta": beta,
        }
        job = api.post("fine_tuning/jobs", json=job_spec(spec, flags, hyperparameters))
        if as_json:
            out.print_json(data=job)
        elif quiet:
            out.print(job["id"])
        else:
            out.print(f"{job['id']}  {job['status']}  {job['model']}")
        if then_watch:
            finished = watch(api, job["id"], tail=8)
            out.print(final_line(finished))
        elif not (quiet or as_json):
            out.print(f"follow it: ftsvc jobs watch {job['id']}")


def progress_text(job: dict[str, Any]) -> str:
    progress = job.get("progress")
    return f"{progress['step']}/{progress['total_steps']}" if progress else "-"


@app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status (e.g. running)")] = None,
    as_json: Json = False,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """The organization's jobs, newest first."""
    with connect(base_url, api_key) as api:
        page = api.get("fine_tuning/jobs", limit=limit, status=status)
    if as_json:
        out.print_json(data=page)
        return
    columns = ("id", "status", "model", "steps", "created", "fine-tuned model")
    values = (
        (j["id"], j["status"], j["model"], progress_text(j), when(j["created_at"]), j["fine_tuned_model"])
        for j in page["data"]
    )
    out.print(rows(table(*columns), values))


def details(job: dict[str, Any]) -> Any:
    method = job["method"]
    hyper = method[method["type"]]["hyperparameters"]
    adapter = job["qlora"]["adapter"]
    progress = job.get("progress")
    facts = [
        ("id", job["id"]),
        ("status", job["status"] + (f": {job['error']['message']}" if job.get("error") else "")),
        ("model", job["model"]),
        ("fine-tuned model", job["fine_tuned_model"]),
        ("training file", job["training_file"]),
        ("validation file", job["validation_file"]),
        ("method", f"{method['type']}: " + ", ".join(f"{k} {v}" for k, v in hyper.items())),
        ("adapter", ", ".join(f"{k} {v}" for k, v in adapter.items())),
        (
            "progress",
            f"{progress['step']}/{progress['total_steps']} steps, {progress['epochs']} epochs"
            + (f", {progress['seconds_per_step']:.2f} s/step" if progress.get("seconds_per_step") else "")
            if progress
            else None,
        ),
        ("created", when(job["created_at"])),
        ("finished", when(job["finished_at"])),
        ("trained tokens", job["trained_tokens"]),
        ("result files", ", ".join(job["result_files"]) or None),
    ]
    grid = table("field", "value")
    grid.show_header = False
    return rows(grid, facts)


@app.command("show")
def show_command(job_id: JobId, as_json: Json = False, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """One job: its status, settings, progress and outcome."""
    with connect(base_url, api_key) as api:
        job = api.get(endpoint("fine_tuning", "jobs", job_id))
    if as_json:
        out.print_json(data=job)
    else:
        out.print(details(job))


def final_line(job: dict[str, Any]) -> str:
    took = f" in {duration(job['finished_at'] - job['created_at'])}" if job.get("finished_at") else ""
    return f"{job['id']} succeeded{took}: {job['fine_tuned_model']}"


@app.command("watch")
def watch_command(
    job_id: JobId,
    tail: Annotated[int, typer.Option(min=1, max=100, help="Events shown in the live view")] = 8,
    base_url: BaseUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Follow a job live until it ends.

    Exit code 0 if it succeeded, 4 if it failed, 5 if it was cancelled; Ctrl-C stops watching, not the job."""
    with connect(base_url, api_key) as api:
        job = watch(api, job_id, tail)
    out.print(final_line(job))


def act(action: str, job_id: str, base_url: str | None, api_key: str | None) -> None:
    with connect(base_url, api_key) as api:
        job = api.post(endpoint("fine_tuning", "jobs", job_id, action))
    note = " (it pauses after its current step)" if job.get("pause_requested") else ""
    out.print(f"{job['id']}: {job['status']}{note}")


@app.command("cancel")
def cancel_command(job_id: JobId, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Cancel a job (a running one stops at its next step)."""
    act("cancel", job_id, base_url, api_key)


@app.command("pause")
def pause_command(job_id: JobId, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Pause a job: a running one saves a checkpoint after its step and frees its GPU."""
    act("pause", job_id, base_url, api_key)


@app.command("resume")
def resume_command(job_id: JobId, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """Queue a paused job again; it continues from its newest checkpoint."""
    act("resume", job_id, base_url, api_key)


@app.command("checkpoints")
def checkpoints_command(job_id: JobId, as_json: Json = False, base_url: BaseUrl = None, api_key: ApiKey = None) -> None:
    """A job's kept checkpoints, newest first.

    Download one with `ftsvc download JOB_ID --checkpoint ID`."""
    with connect(base_url, api_key) as api:
        page = api.get(endpoint("fine_tuning", "jobs", job_id, "checkpoints"), limit=100)
    if as_json:
        out.print_json(data=page)
        return
    values = (
        (
            c["id"],
            c["step_number"],
            figure(c["metrics"].get("train_loss")),
            figure(c["metrics"].get("valid_loss")),
            decimal(c["adapter_bytes"]),
            when(c["created_at"]),
        )
        for c in page["data"]
    )
    out.print(rows(table("id", "step", "train loss", "validation loss", "size", "created"), values))
