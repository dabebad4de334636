"""Trainer callbacks: metrics, events, progress and checkpoints into the job's record as
training runs, and a cooperative stop, checked at every step, when the job is
cancelled, paused or its worker shuts down (both after saving a checkpoint) or its
lease was lost; and the count of the tokens the loss is computed on."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, cast

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from core.states import StopReason
from worker.training import distributed, job_clock
from worker.training.reporting import Reporter

# TRL's DPO trainer logs these beside the loss; the job's metrics keep them as columns.
REWARDS = {
    "rewards/chosen": "rewards_chosen",
    "rewards/rejected": "rewards_rejected",
    "rewards/margins": "rewards_margins",
    "rewards/accuracies": "rewards_accuracies",
}


def _rewards(logs: dict[str, float], prefix: str = "") -> dict[str, float]:
    """The reward metrics among a log's values (none for supervised training)."""
    return {column: logs[prefix + key] for key, column in REWARDS.items() if prefix + key in logs}


# How often, at most, a running job's progress (step, step time) is written.
PROGRESS_SECONDS = 2.0


class TrainedTokens(TrainerCallback, ExportableState):
    """The tokens the loss is computed on so far, over all the job's ranks: labels other
    than -100, after the causal shift (a row's first label predicts nothing). The trainer
    adds each training micro-batch (worker.training.recipe); the count is saved with
    every checkpoint in the trainer state (transformers' stateful callbacks) and taken
    back from it when a run resumes, so a resumed job goes on counting where its
    checkpoint was."""

    def __init__(self, count: int = 0) -> None:
        self.count = count

    @staticmethod
    def in_loss(labels: torch.Tensor) -> torch.Tensor:
        """The tokens of a causal LM batch's loss."""
        return (labels[..., 1:] != -100).sum()

    def add(self, trainer: Any, tokens: torch.Tensor) -> None:
        """`tokens`: this rank's count of a micro-batch, summed with the other ranks'
        (the trainer's accelerator gathers them; on one GPU it is the count itself)."""
        self.count += int(trainer.accelerator.gather(tokens.reshape(1)).sum())

    @staticmethod
    def of(trainer: Any) -> TrainedTokens:
        """The trainer's own counter (every recipe's trainer is given one)."""
        return next(c for c in trainer.callback_handler.callbacks if isinstance(c, TrainedTokens))

    def state(self) -> dict[str, Any]:
        return {"args": {"count": self.count}, "attributes": {}}

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        # A fresh run's state holds this callback's own state; a resumed one, the
        # checkpoint's (one written before this count existed has none: it starts at 0).
        # (transformers annotates the field as the list it is built from; it holds a dict)
        states = cast(dict[str, Any], state.stateful_callbacks)
        saved = states.setdefault(type(self).__name__, self.state())
        self.count = int(saved["args"]["count"])


class JobProgressCallback(TrainerCallback):
    """`checkpoint_seconds`: also save a checkpoint whenever this much time has passed
    since the last one (the "auto" checkpoint schedule)."""

    def __init__(self, reporter: Reporter, checkpoint_seconds: float | None = None) -> None:
        self.reporter = reporter
        self.checkpoint_seconds = checkpoint_seconds
        self.stopped: StopReason | None = None
        # Whether the trainer got past loading, and the last step it finished: which
        # phase a failure belongs to, and where training was.
        self.training_started = False
        self.step = 0
        self.trained_tokens = TrainedTokens()
        self._last_save = time.monotonic()
        self.last_eval_step = -1
        self._last_time = time.perf_counter()
        self._last_tokens = 0
        # The step rate of this run: when and at which step it began training, and when
        # its progress was last written.
        self._begin_time, self._begin_step = time.perf_counter(), 0
        self._last_progress: float | None = None
        self._epochs = 0
        self._first_step_done = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # The trainer's own count: with max_steps, the epochs those steps start.
        self._epochs = state.num_train_epochs
        batches = len(kwargs["train_dataloader"])
        per_epoch = math.ceil(batches / args.gradient_accumulation_steps)
        resumed = f", resuming at step {state.global_step}" if state.global_step else ""
        self.reporter.event(
            f"Training started: {state.max_steps} steps, {self._epochs} epoch{'s' if self._epochs != 1 else ''} of "
            f"{per_epoch} steps ({batches} batches){resumed}",
            data={
                "max_steps": state.max_steps,
                "epochs": self._epochs,
                "steps_per_epoch": per_epoch,
                "batches_per_epoch": batches,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "resume_step": state.global_step,
            },
        )
        self.reporter.progress(state.global_step, state.max_steps, self._epochs, None)
        self.training_started, self.step = True, state.global_step
        self._last_time = self._begin_time = time.perf_counter()
        self._begin_step = state.global_step
        self._last_progress = None

    def _report_progress(self, state: TrainerState) -> None:
        """The step and the mean step time of this run, at the first step and then at
        most every PROGRESS_SECONDS (and at the last step)."""
        now = time.perf_counter()
        due = self._last_progress is None or now - self._last_progress >= PROGRESS_SECONDS
        if not (due or state.global_step >= state.max_steps) or state.global_step <= self._begin_step:
            return
        seconds_per_step = (now - self._begin_time) / (state.global_step - self._begin_step)
        self.reporter.progress(state.global_step, state.max_steps, self._epochs, round(seconds_per_step, 4))
        self._last_progress = now

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        if not logs or "loss" not in logs:  # the end-of-training summary has no loss
            return
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        self._last_time, self._last_tokens = now, tokens
        self.reporter.metric(
            state.global_step,
            {
                "epoch": state.epoch,
                "loss": logs["loss"],
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "mean_token_accuracy": logs.get("mean_token_accuracy"),
                "tokens_per_second": round(rate, 1),
                "tokens_seen": tokens,
                **_rewards(logs),
                "trained_tokens": self.trained_tokens.count,
            },
        )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        self.last_eval_step = state.global_step
        if metrics and "eval_loss" in metrics:
            self.reporter.metric(
                state.global_step,
                {
                    "epoch": state.epoch,
                    "loss": metrics["eval_loss"],
                    "mean_token_accuracy": metrics.get("eval_mean_token_accuracy"),
                    **_rewards(metrics, "eval_"),
                },
                split="valid",
            )

    def _report_first_step(self, state: TrainerState) -> None:
        """How long this process took to its first optimizer step (a resumed run's first
        one here is past step 1): what a job's start-up costs, loading included."""
        if self._first_step_done:
            return
        self._first_step_done = True
        if distributed.is_main():
            seconds = job_clock.seconds()
            self.reporter.event(
                f"First training step done {seconds:.1f} s after the job process started",
                data={"process_seconds": round(seconds, 2), "step": state.global_step},
            )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.step = state.global_step
        self._report_first_step(state)
        self._report_progress(state)
        # Every rank stops and saves when rank 0 does (it alone asks the job's record).
        reason, save = distributed.from_main(self._decide(state))
        if reason is None:
            control.should_save = control.should_save or save
            return
        self.stopped = reason
        control.should_training_stop = True
        control.should_save = save

    def _decide(self, state: TrainerState) -> tuple[StopReason | None, bool]:
        """Whether to stop, and whether to save a checkpoint now."""
        reason = self.reporter.stop_reason()
        if reason is None:
            due = self.checkpoint_seconds is not None and time.monotonic() - self._last_save >= self.checkpoint_seconds
            return None, due and state.global_step < state.max_steps
        # A pause or a worker's shutdown keeps its place: the trainer saves a checkpoint
        # before it stops.
        return reason, reason in ("pause", "shutdown")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        # Each rank writes its own RNG state into the checkpoint: all of them are there
        # once every rank got here.
        distributed.barrier()
        self._last_save = time.monotonic()
        step = state.global_step
        if step >= state.max_steps and self.stopped is None:
            return  # the trainer's save at the end: the job publishes its adapter instead
        directory = Path(str(args.output_dir)) / f"{PREFIX_CHECKPOINT_DIR}-{step}"
        self.reporter.checkpoint(step, directory, checkpoint_metrics(state.log_history, step))


def checkpoint_metrics(log_history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """OpenAI's checkpoint metrics from the trainer's log: the newest train and
    validation values at or before `step`."""
    metrics: dict[str, Any] = {"step": step}
    for entry in log_history:
        if entry.get("step", 0) > step:
            continue
        if "loss" in entry:
            metrics["train_loss"] = entry["loss"]
            metrics["train_mean_token_accuracy"] = entry.get("mean_token_accuracy")
        if "eval_loss" in entry:
            metrics["valid_loss"] = entry["eval_loss"]
            metrics["valid_mean_token_accuracy"] = entry.get("eval_mean_token_accuracy")
    return metrics
