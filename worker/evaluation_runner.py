"""Running one evaluation (in its own process, worker.evaluation_process) under its
lease (worker.leased_work): fetch the base model, extract the job's adapter, load both
as the job trained (worker.evaluating), run the examples through the base and the
fine-tuned model, then publish in one transaction the figures, the side-by-side sample,
the per-example CSV as a result file, and the summary in the job's log. A worker asked
to stop gives the evaluation back to the queue before its next example; one cancelled
(or whose lease was lost) meanwhile has its outputs discarded."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from core import evaluations, files, jobs, registered_models
from core.datasets import DataFile, examples_of
from core.db import session_scope
from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.models import Evaluation
from core.registry import ModelRef
from core.specs import ResolvedSpec
from core.storage import get_storage
from worker import leased_work
from worker.adapter_folder import stored_adapter
from worker.leased_work import Run, Stopped

log = logging.getLogger("ftsvc.worker")
RESULT_FILE = "evaluation.csv"
CSV_COLUMNS = (
    "example",
    "prompt",
    "reference",
    "base_answer",
    "fine_tuned_answer",
    "base_exact_match",
    "base_f1",
    "fine_tuned_exact_match",
    "fine_tuned_f1",
    "base_loss",
    "fine_tuned_loss",
    "trained_tokens",
)


def execute_evaluation(evaluation_id: str, shutdown: threading.Event) -> None:
    leased_work.execute(evaluations.RUNS, evaluation_id, shutdown, _run)


def _inputs(evaluation: Evaluation) -> tuple[ResolvedSpec, ModelRef, DataFile]:
    """The job's spec, the base model and the examples, as they are now (the base or the
    file may have been removed since the evaluation was created)."""
    org = evaluation.organization_id
    with session_scope() as session:
        spec = ResolvedSpec.model_validate(jobs.get_job(session, org, evaluation.job_id).spec)
        try:
            base = registered_models.resolve_for(session, org, evaluation.base_model)
        except InvalidRequest as missing:
            raise Conflict(
                f"The base model {evaluation.base_model!r} is no longer present on this service ({missing.message})",
                param="model",
                code="base_model_not_found",
            ) from None
        try:
            data = files.data_file(files.get_file(session, org, evaluation.file_id, param="file"))
        except NotFound:
            raise Conflict(
                f"File {evaluation.file_id} was deleted before the evaluation ran", param="file", code="file_not_found"
            ) from None
    return spec, base, data


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def summary(results: dict[str, Any], file_id: str) -> str:
    """The job's log line: each figure from the base model to the fine-tuned one."""
    base, tuned = results["base"], results["fine_tuned"]
    changes = ", ".join(
        f"{label} {_figure(base[key])} -> {_figure(tuned[key])}"
        for label, key in (("exact match", "exact_match"), ("F1", "f1"), ("loss", "loss"), ("perplexity", "perplexity"))
    )
    return f"succeeded on {tuned['n']} examples of {file_id}: {changes} (base -> fine-tuned)"


def _rows(evaluated: Sequence[Any]) -> Iterator[Sequence[object]]:
    for number, result in enumerate(evaluated, start=1):
        base, tuned = result.by_model["base"], result.by_model["fine_tuned"]
        yield (
            number,
            result.prompt,
            result.reference,
            base.answer,
            tuned.answer,
            base.exact_match,
            round(base.f1, 6),
            tuned.exact_match,
            round(tuned.f1, 6),
            round(base.loss_sum / base.tokens, 6) if base.tokens else None,
            round(tuned.loss_sum / tuned.tokens, 6) if tuned.tokens else None,
            tuned.tokens,
        )


def _sample(evaluated: Sequence[Any], size: int) -> list[dict[str, Any]]:
    sample = []
    for result in evaluated[:size]:
        base, tuned = result.by_model["base"], result.by_model["fine_tuned"]
        sample.append(
            {
                "prompt": result.prompt,
                "reference": result.reference,
                "base_answer": base.answer,
                "fine_tuned_answer": tuned.answer,
                "base_exact_match": base.exact_match,
                "base_f1": base.f1,
                "fine_tuned_exact_match": tuned.exact_match,
                "fine_tuned_f1": tuned.f1,
            }
        )
    return sample


def _run(run: Run[Evaluation], workdir: Path) -> None:
    evaluation, events = run.row, run.log
    storage, stored = get_storage(), None
    try:
        run.between_phases()
        events.event(f"process {os.getpid()} started on {socket.gethostname()}; loading the evaluation stack")
        # Imported here so that a failure to import the stack also ends the evaluation cleanly.
        from peft import PeftModel

        from core.tokenization import prepare_tokenizer
        from worker.evaluating import Evaluator
        from worker.model_download import fetch_model
        from worker.result_files import write_csv
        from worker.training.recipe import load_base_model
        from worker.training.runtime import pick_runtime

        spec, base, data = _inputs(evaluation)
        base = fetch_model(base, events)
        adapter = stored_adapter(evaluation.adapter_key, evaluation.model, workdir)
        run.between_phases()
        quantization = spec.qlora.quantization
        runtime = pick_runtime(quantization.compute_dtype if quantization else "auto")
        how = "in 4 bits" if quantization else "unquantized"
        events.event(f"Loading {base.name} {how} with the adapter of {evaluation.model} on {runtime.device_name}")
        base_model, _ = load_base_model(spec, base, runtime, "sdpa", events)
        model = PeftModel.from_pretrained(base_model, str(adapter))
        model.eval()
        with session_scope() as session:
            evaluations.RUNS.record_runtime(
                session, evaluation.id, {"device": runtime.device, "compute_dtype": runtime.compute_dtype}
            )
        training = spec.qlora
        evaluator = Evaluator(
            model,
            prepare_tokenizer(base),
            training.training.max_seq_length,
            training.data.train_on_inputs,
            evaluation.max_tokens,
            runtime.device,
        )
        evaluated = []
        for example in islice(examples_of(data), evaluation.max_examples):
            run.between_phases()
            if (result := evaluator.evaluate(example)) is not None:
                evaluated.append(result)
        if not evaluated:
            raise InvalidRequest(
                f"No example of {evaluation.file_id} has an assistant turn to answer", param="file", code="invalid_file"
            )
        figures: dict[str, Any] = {name: totals.scores() for name, totals in evaluator.totals.items()}
        figures["tokens"] = evaluator.totals["fine_tuned"].tokens
        file_id = new_id("file")
        stored = write_csv(storage, f"files/{file_id}", CSV_COLUMNS, _rows(evaluated))
        with session_scope() as session:
            published = evaluations.RUNS.succeed(
                session,
                evaluation.id,
                run.owner,
                summary(figures, evaluation.file_id),
                figures | {"result_file": file_id},
                results=figures,
                sample=_sample(evaluated, evaluation.sample_size),
                result_files=[file_id],
            )
            if published:
                files.register_result(session, evaluation.organization_id, file_id, RESULT_FILE, stored)
        if not published:
            storage.delete(stored.key)
            events.event("the evaluation changed state while it was published; its results were discarded", "warn")
    except Stopped as stop:
        if not run.stopped(stop):
            events.event(f"stopped without publishing: {stop} (cancelled, or run by another worker)")
    except Exception as exc:
        log.exception("evaluation %s failed", evaluation.id)
        memory = "the base model and the adapter do not fit on this worker's device"
        run.failed(leased_work.failure(exc, "evaluation", memory), exc)
        if stored is not None:
            storage.delete(stored.key)
