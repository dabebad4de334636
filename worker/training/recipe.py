"""The QLoRA recipe: setup (tokenizer, data, 4-bit model, LoRA) -> train -> save.

The same code runs on CPU (tests, bitsandbytes 0.50 runs NF4 there) and on CUDA; only
the runtime (device, compute dtype) differs. Built from transformers, peft and TRL's
SFTTrainer rather than a hand-written loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from jinja2 import TemplateError
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from trl import SFTConfig, SFTTrainer

from core.registry import ModelRef
from core.specs import JobSpec
from worker.failures import DataError, ModelLoadError
from worker.reporting import JobReporter
from worker.training.callbacks import JobProgressCallback
from worker.training.data import load_chat_dataset
from worker.training.runtime import Runtime


@dataclass
class TrainResult:
    adapter_dir: Path
    trained_tokens: int
    steps: int
    cancelled: bool


def _load_kwargs() -> dict[str, object]:
    # Never run code shipped with a model, and read only safetensors weights.
    return {"trust_remote_code": False}


class QLoRARecipe:
    def __init__(
        self,
        spec: JobSpec,
        model_ref: ModelRef,
        training_path: Path,
        validation_path: Path | None,
        workdir: Path,
        runtime: Runtime,
        reporter: JobReporter,
    ) -> None:
        self.spec, self.model_ref, self.runtime, self.reporter = spec, model_ref, runtime, reporter
        self.training_path, self.validation_path, self.workdir = training_path, validation_path, workdir
        self.progress = JobProgressCallback(reporter)

    # -- setup ---------------------------------------------------------------------------
    def load_tokenizer(self) -> PreTrainedTokenizerBase:
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_ref.source, **_load_kwargs())
        except Exception as exc:
            raise ModelLoadError(f"Cannot load the tokenizer of {self.model_ref.name}: {exc}", param="model") from exc
        if tokenizer.chat_template is None:
            raise DataError(f"{self.model_ref.name} has no chat template to format conversations with", param="model")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def load_model(self) -> PreTrainedModel:
        q = self.spec.qlora.quantization
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=self.runtime.torch_dtype,
        )
        device = self.runtime.device
        try:
            model = AutoModelForCausalLM.from_pretrained(
                self.model_ref.source,
                quantization_config=quantization,
                dtype=self.runtime.torch_dtype,
                device_map={"": device},
                use_safetensors=True,
                **_load_kwargs(),
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"Cannot load {self.model_ref.name} in 4 bits: {exc}", param="model") from exc
        # Casts norms to fp32 and enables gradient checkpointing: the QLoRA recipe.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)

    def lora_config(self) -> LoraConfig:
        lora = self.spec.qlora.lora
        return LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            bias="none",
            task_type="CAUSAL_LM",
        )

    def training_args(self, has_validation: bool, assistant_only: bool) -> SFTConfig:
        hp, training = self.spec.hparams, self.spec.qlora.training
        dtype = self.runtime.compute_dtype
        return SFTConfig(
            output_dir=str(self.workdir / "trainer"),
            num_train_epochs=hp.n_epochs,  # type: ignore[arg-type]
            per_device_train_batch_size=hp.batch_size,  # type: ignore[arg-type]
            per_device_eval_batch_size=hp.batch_size,  # type: ignore[arg-type]
            learning_rate=training.learning_rate * hp.learning_rate_multiplier,  # type: ignore[operator]
            gradient_accumulation_steps=training.gradient_accumulation_steps,
            warmup_steps=training.warmup_ratio,  # a float below 1 is a ratio of all steps
            lr_scheduler_type=training.lr_scheduler,
            max_steps=training.max_steps or -1,
            logging_steps=training.logging_steps,
            seed=self.spec.seed,  # type: ignore[arg-type]
            data_seed=self.spec.seed,
            bf16=dtype == "bfloat16" and self.runtime.on_cuda,
            fp16=dtype == "float16" and self.runtime.on_cuda,
            use_cpu=not self.runtime.on_cuda,
            max_length=training.max_seq_length,
            assistant_only_loss=assistant_only,
            packing=False,
            gradient_checkpointing=True,
            include_num_input_tokens_seen="non_padding",
            eval_strategy="epoch" if has_validation else "no",
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )

    # -- train and save --------------------------------------------------------------------
    def run(self) -> TrainResult:
        tokenizer = self.load_tokenizer()
        cache = self.workdir / "datasets"
        train_dataset = load_chat_dataset(self.training_path, cache)
        eval_dataset = load_chat_dataset(self.validation_path, cache) if self.validation_path else None
        # Templates that mark assistant turns let the loss skip prompts; others train on all.
        assistant_only = "{% generation %}" in (tokenizer.chat_template or "")
        self.reporter.event(
            f"Loaded {len(train_dataset)} training conversations"
            + (f" and {len(eval_dataset)} validation conversations" if eval_dataset is not None else "")
            + ("; loss on assistant tokens only" if assistant_only else "; loss on all tokens"),
        )
        model = self.load_model()
        self.reporter.event(f"Loaded {self.model_ref.name} in 4 bits on {self.runtime.device_name}")
        try:  # SFTTrainer applies the chat template and tokenizes here
            trainer = SFTTrainer(
                model=model,
                args=self.training_args(eval_dataset is not None, assistant_only),
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=tokenizer,
                peft_config=self.lora_config(),
                callbacks=[self.progress],
            )
        except (ValueError, TemplateError) as exc:
            raise DataError(f"Cannot prepare the training data: {exc}", param="training_file") from exc
        trainer.train()
        adapter_dir = self.workdir / "adapter"
        trainer.model.save_pretrained(adapter_dir, safe_serialization=True)
        tokenizer.save_pretrained(adapter_dir)
        return TrainResult(
            adapter_dir, int(trainer.state.num_input_tokens_seen), trainer.state.global_step, self.progress.cancelled
        )
