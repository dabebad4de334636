"""Trainer callbacks: metrics, events and checkpoints into the job's record as training
runs, and a cooperative stop, checked at every step, when the job is cancelled, paused
or its worker shuts down (both after saving a checkpoint) or its lease was lost."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from core.states import StopReason
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
        self._last_save = time.monotonic()
        self.last_eval_step = -1
        self._last_time = time.perf_counter()
        self._last_tokens = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.reporter.event(
            f"Training started: {state.max_steps} steps",
            data={"max_steps": state.max_steps, "epochs": args.num_train_epochs},
        )
        self.training_started, self.step = True, state.global_step
        self._last_time = time.perf_counter()

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

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.step = state.global_step
        reason = self.reporter.stop_reason()
        if reason is None:
            due = self.checkpoint_seconds is not None and time.monotonic() - self._last_save >= self.checkpoint_seconds
            if due and state.global_step < state.max_steps:
                control.should_save = True
            return
        self.stopped = reason
        control.should_training_stop = True
        # A pause or a worker's shutdown keeps its place: the trainer saves a checkpoint
        # before it stops.
        control.should_save = reason in ("pause", "shutdown")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
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
