"""The recipe on its own, as a plain script: no database, no broker, no API.

    python -m worker.training --model var/models/tiny-llama --data examples/chat.jsonl \\
        --spec '{"qlora": {"training": {"max_steps": 5}}}' --output /tmp/adapter

`--spec` is a job spec without `model` and `training_file` (JSON text, or the path of a
JSON file), validated and resolved as job creation does; events print to the console
and the trained adapter (PEFT format) is written to `--output`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError

from core.datasets import DataFile, ValidationReport, detect_file_type, validate
from core.errors import ServiceError
from core.formats import as_format_name
from core.registry import ModelRef
from core.specs import JobSpec, check_data_fits_method, resolve
from core.tasks import FileTasks, job_tasks
from core.validation_errors import problems
from worker.training.failures import JobFailure
from worker.training.recipe import JobData, Recipe
from worker.training.reporting import ConsoleReporter
from worker.training.runtime import pick_runtime


def _fail(message: str) -> NoReturn:
    raise SystemExit(f"ftsvc: error: {message}")


def _file_text(name: str) -> str | None:
    """The text of the file `name`, if it names one (a long JSON text is too long to be a
    file name, which the OS says with an error)."""
    try:
        return Path(name).read_text() if Path(name).is_file() else None
    except OSError:
        return None


def _spec(text: str, model: Path, data: Path) -> JobSpec:
    """The job spec of `--spec` (JSON text or a file) for this model and data."""
    try:
        fields = json.loads(_file_text(text) or text)
    except json.JSONDecodeError as exc:
        _fail(f"--spec is not valid JSON: {exc}")
    if not isinstance(fields, dict):
        _fail("--spec must be a JSON object")
    try:
        return JobSpec.model_validate(fields | {"model": model.name, "training_file": data.name})
    except ValidationError as exc:
        first = problems([dict(error) for error in exc.errors()], fields)[0]
        _fail(f"--spec: {first.param}: {first.message}" if first.param else f"--spec: {first.message}")


def _data_file(path: Path, format_name: str) -> tuple[DataFile, ValidationReport]:
    with path.open("rb") as stream:
        file_type = detect_file_type(path.name, stream.read(512))
        stream.seek(0)
        report = validate(stream, file_type, format_name)
    data_format = as_format_name(report.format)
    if not report.ok or data_format is None:
        _fail(f"{path} is not a valid training file: {report.summary()}")
    return DataFile.local(path, file_type, data_format), report


def main(argv: list[str] | None = None) -> Path:
    """Train; returns where the adapter was written."""
    parser = argparse.ArgumentParser(prog="python -m worker.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a local model directory (config.json, safetensors)")
    parser.add_argument("--data", type=Path, required=True, help="a training file in any supported format")
    parser.add_argument("--spec", default="{}", help="job spec fields as JSON text or a JSON file")
    parser.add_argument("--output", type=Path, required=True, help="where the adapter is written")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        _fail(f"--data {args.data} is not a file")
    if not (args.model / "config.json").is_file():
        _fail(f"--model {args.model} is not a model directory (no config.json)")
    asked = _spec(args.spec, args.model, args.data)
    data, report = _data_file(args.data, asked.qlora.data.format)
    try:
        check_data_fits_method(asked.method.type, data.format, "--data", str(args.data))
        names = report.tasks.as_dict()
        tasks = job_tasks(asked.qlora.adapter.type, FileTasks("--data", str(args.data), names), None, None)
    except ServiceError as exc:
        _fail(exc.message)
    spec = resolve(asked, n_examples=report.n_examples, seed=asked.seed or 0, data_format=data.format, tasks=tasks)
    quantization = spec.qlora.quantization
    runtime = pick_runtime(quantization.compute_dtype if quantization else "auto")
    workdir = Path(tempfile.mkdtemp(prefix="ftsvc-recipe-"))
    try:
        model = ModelRef(args.model.name, str(args.model.resolve()), True)
        result = Recipe(spec, model, JobData(data, None), workdir, runtime, ConsoleReporter()).run()
        shutil.copytree(result.adapter_dir, args.output, dirs_exist_ok=True)
    except (JobFailure, ServiceError) as exc:
        _fail(str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    output: Path = args.output
    print(f"adapter: {output} ({result.steps} steps, {result.trained_tokens} tokens)", flush=True)
    return output


if __name__ == "__main__":
    main(sys.argv[1:])
