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


def train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the script with `args`; it must succeed."""
    run = subprocess.run(
        [sys.executable, "-m", "worker.training", *args],
        cwd=tmp_path,
        env=os.environ | UNREACHABLE | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_the_recipe_trains_an_adapter_from_a_plain_script(tiny_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "adapter"
    spec = {"seed": 3, "qlora": {"training": {"max_steps": 4, "learning_rate": 0.01}, "adapter": {"r": 4}}}
    args = ["--model", str(tiny_model), "--data", str(EXAMPLES / "chat.jsonl"), "--output", str(output)]
    run = train(tmp_path, *args, "--spec", json.dumps(spec))
    assert "Training started: 4 steps" in run.stdout
    assert f"adapter: {output} (4 steps" in run.stdout
    config = json.loads((output / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("LORA", 4)
    weights = load_file(output / "adapter_model.safetensors")
    # LoRA's B matrices start at zero: after training they are not.
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())


@pytest.mark.slow
def test_the_recipe_trains_dpo_on_preference_pairs(tiny_model: Path, tmp_path: Path) -> None:
    output = tmp_path / "adapter"
    spec = {"method": {"type": "dpo"}, "qlora": {"training": {"max_steps": 3, "learning_rate": 0.01}}}
    args = ["--model", str(tiny_model), "--data", str(EXAMPLES / "preference.jsonl"), "--output", str(output)]
    run = train(tmp_path, *args, "--spec", json.dumps(spec))
    assert "adapter by DPO (beta 0.1) on padded batches" in run.stdout and "Loaded 24 training examples" in run.stdout
    assert f"adapter: {output} (3 steps" in run.stdout
    weights = load_file(output / "adapter_model.safetensors")
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())


def refusal(tmp_path: Path, *args: str) -> list[str]:
    """Run the script with `args`; it must exit 1 with its error lines on stderr, training nothing."""
    run = subprocess.run(
        [sys.executable, "-m", "worker.training", *args, "--output", "out"],
        cwd=tmp_path,
        env=os.environ | UNREACHABLE | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()
    return run.stderr.strip().splitlines()


def test_bad_data_is_one_line_and_nothing_is_trained(tiny_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    assert refusal(tmp_path, "--model", str(tiny_model), "--data", str(bad)) == [
        f"ftsvc: error: {bad} is not a valid training file: 1 problem(s); first: line 1, field messages: "
        "needs at least one assistant message to train on"
    ]


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ("{not json", "ftsvc: error: --spec is not valid JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "ftsvc: error: --spec must be a JSON object"),
        ('{"qlora": {"adapter": {"rank": 8}}}', "ftsvc: error: --spec: qlora.adapter.rank: not a parameter"),
        ('{"qlora": {"training": {"max_steps": 0}}}', "ftsvc: error: --spec: qlora.training.max_steps: must be"),
        ('{"method": {"type": "dpo"}}', "ftsvc: error: method.type 'dpo' trains on preference pairs, but --data "),
        (
            '{"qlora": {"adapter": {"type": "multitask_prompt_tuning"}}}',
            "ftsvc: error: qlora.adapter.type multitask_prompt_tuning trains one prompt per task, but the examples "
            "of --data",
        ),
        # Longer than a file name may be: JSON text all the same.
        ('{"suffix": "%s"}' % ("s" * 300), "ftsvc: error: --spec: suffix: must be 1 to 64 letters"),
    ],
)
def test_a_bad_spec_is_one_line(tiny_model: Path, tmp_path: Path, spec: str, line: str) -> None:
    data = str(EXAMPLES / "chat.jsonl")
    (error,) = refusal(tmp_path, "--model", str(tiny_model), "--data", data, "--spec", spec)
    assert error.startswith(line), error


def test_missing_model_or_data_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    data = str(EXAMPLES / "chat.jsonl")
    assert refusal(tmp_path, "--model", str(tiny_model), "--data", "nothing.jsonl") == [
        "ftsvc: error: --data nothing.jsonl is not a file"
    ]
    assert refusal(tmp_path, "--model", str(tmp_path), "--data", data) == [
        f"ftsvc: error: --model {tmp_path} is not a model directory (no config.json)"
    ]
