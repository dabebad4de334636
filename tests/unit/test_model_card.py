"""The model card of each kind of model: what it says for each adapter method, base
model and data format, and a merged model's loading code, run as written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.formats import FormatName
from core.models import Job, JobMetric
from core.specs import JobSpec, resolve
from tests.helpers import front_matter, python_block, run_snippet
from worker.model_card import ModelCardFacts, folder_name, latest_metrics, render, write_model_card

NAME = "ft:owner/base-7b:org-a:ftjob-1"


def facts(
    model: str = "owner/base-7b", data_format: FormatName = "chat", tasks: list[str] | None = None, **fields: Any
) -> ModelCardFacts:
    asked = JobSpec(model=model, training_file="file-1", **fields)
    spec = resolve(asked, n_examples=10, seed=7, data_format=data_format, tasks=tasks)
    job = Job(id="ftjob-1", model=model, spec=spec.model_dump(mode="json"), statistics={"examples": 10})
    return ModelCardFacts.of_job(job, NAME, {"step": 5, "train_loss": 0.5})


def test_a_hub_base_loads_as_is_and_a_name_becomes_a_folder_name() -> None:
    card = render(facts(), "adapter")
    assert folder_name(NAME) == "ft-owner-base-7b-org-a-ftjob-1"
    assert front_matter(card)["base_model"] == "owner/base-7b"
    assert 'base_model = "owner/base-7b"  # the base model: from the Hugging Face hub' in card
    assert 'adapter = "ft-owner-base-7b-org-a-ftjob-1"  # this folder' in card
    assert "not a Hugging Face hub id" not in card and "--base path/to" not in card
    assert "max_lora_rank=16" in card and "--lora ft-owner-base-7b-org-a-ftjob-1.gguf" in card


def test_vllm_and_llama_cpp_get_what_they_can_load() -> None:
    rslora = render(facts(qlora={"adapter": {"r": 24, "use_rslora": True}}), "adapter")
    assert "max_lora_rank=32" in rslora and "--lora-scaled ft-owner-base-7b-org-a-ftjob-1.gguf 4.899" in rslora
    dora = render(facts(qlora={"adapter": {"use_dora": True}}), "adapter")
    assert "LoRARequest" not in dora and "Both load LoRA adapters only, not DoRA" in dora
    assert "model.load_adapter(adapter)" in dora
    prompt = render(facts(qlora={"adapter": {"type": "prompt_tuning"}}), "adapter")
    assert "runs through PEFT only" in prompt and "load_adapter" not in prompt and "LoRARequest" not in prompt
    multitask = render(facts(tasks=["qa", "sum"], qlora={"adapter": {"type": "multitask_prompt_tuning"}}), "adapter")
    assert 'task = json.load(open(f"{adapter}/tasks.json"))["qa"]' in multitask
    assert "task_ids=torch.tensor([task])" in multitask and "runs through PEFT only" in multitask


def test_the_method_and_the_data_format_show() -> None:
    dpo = render(facts(data_format="preference", method={"type": "dpo"}), "adapter")
    assert "by DPO (beta 0.1)" in dpo and "dpo" in front_matter(dpo)["tags"]
    text = render(facts(data_format="text"), "adapter")
    assert 'tokenizer("Once upon a time", return_tensors="pt")' in text and "apply_chat_template" not in text
    unquantized = render(facts(qlora={"adapter": {"type": "loha"}}), "adapter")
    assert "on the unquantized base" in unquantized and "| quantization | none |" in unquantized


def test_the_final_figures_are_the_newest_of_each_split() -> None:
    points = [
        JobMetric(step=2, split="valid", loss=2.0),
        JobMetric(step=1, split="train", loss=3.0, mean_token_accuracy=0.1),
        JobMetric(step=2, split="train", loss=2.5, mean_token_accuracy=None),
    ]
    assert latest_metrics(points) == {
        "step": 2,
        "train_loss": 2.5,
        "train_mean_token_accuracy": 0.1,
        "valid_loss": 2.0,
    }


def test_a_merged_models_card_loads_it_as_written(tiny_model: Path, tmp_path: Path) -> None:
    card = facts(model="tiny-llama")
    folder = tmp_path / card.folder
    shutil.copytree(tiny_model, folder)  # stands for a merged model: a whole model's folder
    text = write_model_card(folder, card, "merged").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and "base_model:finetune:tiny-llama" in meta["tags"]
    assert "convert_hf_to_gguf.py" in text and "PeftModel" not in text
    snippet = python_block(text, "### With transformers")
    ran = run_snippet(snippet, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert int(ran.stdout.split()[-1]) > 0, "nothing was generated"
