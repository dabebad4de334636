"""The training recipe runs from a plain script, with no database or broker reachable:
what a job trains is the recipe alone, like a torchtune recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT
from tests.helpers import EXAMPLES

# Nothing listens on port 1: a run that touched the database or the broker would fail.
UNREACHABLE = {
    "FTSVC_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    "FTSVC_BROKER_URL": "redis://127.0.0.1:1/0",
}


@pytest.mark.slow
def test_the_recipe_trains_an_adapter_from_a_plain_script(tiny_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "adapter"
    spec = {"seed": 3, "qlora": {"training": {"max_steps": 4, "learning_rate": 0.01}, "adapter": {"r": 4}}}
    args = ["--model", str(tiny_model), "--data", str(EXAMPLES / "chat.jsonl"), "--output", str(output)]
    run = subprocess.run(
        [sys.executable, "-m", "worker.training", *args, "--spec", json.dumps(spec)],
        cwd=tmp_path,
        env=os.environ | UNREACHABLE | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Training started: 4 steps" in run.stdout
    assert f"adapter: {output} (4 steps" in run.stdout
    config = json.loads((output / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("LORA", 4)
    weights = load_file(output / "adapter_model.safetensors")
    # LoRA's B matrices start at zero: after training they are not.
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())


def test_bad_data_is_one_line_and_nothing_is_trained(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    run = subprocess.run(
        [sys.executable, "-m", "worker.training", "--model", str(tiny_model), "--data", str(bad), "--output", "out"],
        cwd=tmp_path,
        env=os.environ | UNREACHABLE | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"ftsvc: error: {bad} is not a valid training file: 1 problem(s); first: line 1, field messages: "
        "needs at least one assistant message to train on"
    ]
    assert not (tmp_path / "out").exists()
