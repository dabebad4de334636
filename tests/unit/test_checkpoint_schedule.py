"""The "auto" checkpoint schedule: a save whenever the configured training time has
passed since the last one, never at the last step (the job publishes its adapter)."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerControl, TrainerState, TrainingArguments

from worker.training.callbacks import JobProgressCallback
from worker.training.reporting import ConsoleReporter


def test_a_checkpoint_is_due_after_the_interval_and_not_at_the_end(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[])
    state = TrainerState(global_step=3, max_steps=10)
    callback = JobProgressCallback(ConsoleReporter(), checkpoint_seconds=0.2)

    def due() -> bool:
        control = TrainerControl()
        callback.on_step_end(args, state, control)
        return control.should_save

    assert not due()
    time.sleep(0.25)
    assert due()
    callback.on_save(args, state, TrainerControl())  # the save resets the clock
    assert not due()
    time.sleep(0.25)
    state.global_step = 10
    assert not due()  # the last step: no checkpoint
