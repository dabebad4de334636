"""The recipe: setup (tokenizer, data, 4-bit model, adapter) -> train -> save.

The same code runs on CPU (tests; bitsandbytes 0.50 runs NF4 there) and on CUDA; only
the runtime (device, compute dtype) differs. Built from transformers, peft and TRL's
SFTTrainer (supervised) or DPOTrainer (preference pairs, worker.training.preference)
rather than a hand-written loop; the data arrive already tokenized with their loss
masks (core.tokenization, core.preferences), so TRL only batches them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftConfig, PeftModel, prepare_model_for_kbit_training
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedModel,
    TrainerCallback,
)
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from core.datasets import DataFile
from core.errors import ServiceError
from core.memory_estimate import ModelShape
from core.registry import ModelRef
from core.specs import ResolvedDpoHyperparameters, ResolvedSpec
from core.states import StopReason
from core.tokenization import PreparedTokenizer, prepare_tokenizer
from worker.training import attention, base_cache, distributed, fused_lora, job_clock
from worker.training.adapters import AdaLoraBudgetCallback, peft_config, planned_steps, saved_prompt_learning
from worker.training.callbacks import JobProgressCallback, TrainedTokens
from worker.training.data import encoded_dataset, hold_out
from worker.training.distributed import accumulation_per_rank
from worker.training.failures import DataError, ModelLoadError
from worker.training.multitask import TaskIdsCollator, task_ids, write_tasks
from worker.training.preference import ResumableDPOTrainer, dpo_config, pair_dataset
from worker.training.reporting import EventLog, Reporter
from worker.training.resume import ExactAdapterResume
from worker.training.runtime import Runtime, four_bit_config
from worker.training.speed import Speed, resolve_speed


class ResumableSFTTrainer(ExactAdapterResume, SFTTrainer):
    """SFTTrainer whose resume restores the adapter exactly as it was trained."""

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        # Called for every training micro-batch: also count the tokens in the loss.
        super()._track_num_input_tokens(inputs)
        TrainedTokens.of(self).add(self, TrainedTokens.in_loss(inputs["labels"]))


class MultitaskSFTTrainer(ResumableSFTTrainer):
    """For a multitask prompt-tuning adapter (`tasks`: the job's task names, in id
    order): every batch carries its examples' task ids, and every save of the adapter
    (checkpoints too) writes the task names beside it."""

    def __init__(self, *args: Any, tasks: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = tasks
        self.data_collator = TaskIdsCollator(self.data_collator)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        directory = output_dir or self.args.output_dir
        assert directory is not None, "the recipe names the trainer's output_dir"
        write_tasks(Path(directory), self.tasks)


@dataclass
class TrainResult:
    adapter_dir: Path
    # Tokens the loss was computed on, over every step (callbacks.TrainedTokens).
    trained_tokens: int
    steps: int
    # Why training stopped before its end (cancelled, paused, lease lost); None: it ran out.
    stopped: StopReason | None
    speed: Speed


@dataclass
class JobData:
    training: DataFile
    validation: DataFile | None


def load_base_model(
    spec: ResolvedSpec, model_ref: ModelRef, runtime: Runtime, attn: str, events: EventLog
) -> tuple[PreTrainedModel, base_cache.CacheUse]:
    """The base model as a job trains on it: in 4 bits as its spec quantizes it (or
    unquantized), computing in the runtime's dtype, on its device; a quantized base from
    the worker's pre-quantized copy when it has one (worker.training.base_cache), and
    how that cache was used.
    Evaluations load it this way too, so that the adapter applies to the weights it was
    trained against."""
    quantization = four_bit_config(spec.qlora.quantization, runtime.torch_dtype)

    def load(source: str, quantizing: dict[str, Any]) -> PreTrainedModel:
        try:
            model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(
                source,
                **quantizing,
                dtype=runtime.torch_dtype,
                device_map={"": runtime.device},
                attn_implementation=attn,
                use_safetensors=True,
                trust_remote_code=False,
            )
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            how = "in 4 bits" if quantization else f"in {runtime.compute_dtype}"
            raise ModelLoadError(f"Cannot load {model_ref.name} {how}: {exc}", param="model") from exc
        return model

    if quantization is None:
        return load(model_ref.source, {"quantization_config": None}), base_cache.OFF
    return base_cache.load(model_ref.name, model_ref.source, quantization, load, events)


class Recipe:
    """`resume_from`: a trainer checkpoint directory to continue from (same job);
    `initial_adapter`: adapter weights to start from (another job's checkpoint);
    `checkpoint_seconds`: training time between checkpoints when the spec's
    `checkpoint_steps` is "auto"."""

    def __init__(
        self,
        spec: ResolvedSpec,
        model_ref: ModelRef,
        data: JobData | None,
        workdir: Path,
        runtime: Runtime,
        reporter: Reporter,
        resume_from: Path | None = None,
        initial_adapter: Path | None = None,
        checkpoint_seconds: float = 600.0,
    ) -> None:
        self.spec, self.model_ref, self.data, self.runtime = spec, model_ref, data, runtime
        self.workdir, self.reporter = workdir, reporter
        self.resume_from, self.initial_adapter = resume_from, initial_adapter
        timed = reporter.saves_checkpoints and spec.qlora.training.checkpoint_steps == "auto"
        self.progress = JobProgressCallback(reporter, checkpoint_seconds if timed else None)

    # -- setup ---------------------------------------------------------------------------
    def load_tokenizer(self) -> PreparedTokenizer:
        try:
            prepared = prepare_tokenizer(self.model_ref)
        except ServiceError as exc:
            raise ModelLoadError(exc.message, param="model") from exc
        for note in prepared.notes():
            self.reporter.event(note, level="warn")
        return prepared

    def load_datasets(self, prepared: PreparedTokenizer) -> tuple[Dataset, Dataset | None]:
        data, training = self.spec.qlora.data, self.spec.qlora.training
        # Each rank encodes the data itself (the trainer then hands each its share).
        cache = self.workdir / "datasets" / f"rank-{distributed.rank()}"

        def encode(source: DataFile) -> Dataset:
            if self.spec.method.type == "dpo":
                return pair_dataset(prepared, source, training.max_seq_length, cache)
            ids = task_ids(data.tasks) if data.tasks else None
            return encoded_dataset(prepared, source, training.max_seq_length, data.train_on_inputs, cache, ids)

        if self.data is None:
            raise DataError("This run was given no data files", param="training_file")
        train = encode(self.data.training)
        valid = encode(self.data.validation) if self.data.validation else None
        if data.validation_split:
            train, valid = hold_out(train, data.validation_split, self.spec.seed)
        return train, valid

    def load_model(self, speed: Speed) -> tuple[PreTrainedModel, base_cache.CacheUse]:
        """The base prepared for training, and how the worker's base cache served it."""
        attn = attention.register() if speed.attention == attention.NAME else speed.attention
        model, cache_use = load_base_model(self.spec, self.model_ref, self.runtime, attn, self.reporter)
        q = self.spec.qlora.quantization
        checkpointing = speed.gradient_checkpointing
        if q is not None and speed.upcast_unquantized:
            # peft's QLoRA preparation: freezes the base, casts every unquantized weight
            # (norms, embeddings, head) to fp32, enables checkpointing.
            prepared: PreTrainedModel = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
            return prepared, cache_use
        # The same without the fp32 cast: the residual stream stays in the compute dtype.
        model.requires_grad_(False)
        if checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        return model, cache_use

    def common_args(self, has_validation: bool, speed: Speed) -> dict[str, Any]:
        """The Trainer's arguments every method shares."""
        hp, training = self.spec.hparams, self.spec.qlora.training
        dtype = self.runtime.compute_dtype
        if not has_validation:
            evaluation: dict[str, Any] = {"eval_strategy": "no"}
        elif training.eval_steps:
            evaluation = {"eval_strategy": "steps", "eval_steps": training.eval_steps}
        else:
            evaluation = {"eval_strategy": "epoch"}
        return {
            "output_dir": str(self.workdir / "trainer"),
            "num_train_epochs": hp.n_epochs,
            "learning_rate": training.learning_rate * hp.learning_rate_multiplier,
            "warmup_steps": training.warmup_ratio,  # a float below 1 is a ratio of all steps
            "lr_scheduler_type": training.lr_scheduler,
            "max_steps": training.max_steps or -1,
            "logging_steps": training.logging_steps,
            "seed": self.spec.seed,
            "data_seed": self.spec.seed,
            "bf16": dtype == "bfloat16" and self.runtime.on_cuda,
            "fp16": dtype == "float16" and self.runtime.on_cuda,
            "use_cpu": not self.runtime.on_cuda,
            "gradient_checkpointing": speed.gradient_checkpointing,
            "optim": speed.optimizer,
            "include_num_input_tokens_seen": "non_padding",
            **self.checkpointing(),
            "report_to": [],
            "disable_tqdm": True,
            "dataloader_num_workers": 0,
            # Under DDP: every trainable parameter (the adapter's) takes part in every
            # forward pass, so DDP need not search the graph for unused ones each step
            # (the Trainer would, for a model that is not a transformers PreTrainedModel).
            "ddp_find_unused_parameters": False,
            **evaluation,
        }

    def training_args(self, has_validation: bool, speed: Speed, mean_tokens: float) -> SFTConfig:
        hp, training = self.spec.hparams, self.spec.qlora.training
        if speed.tokens_per_step:
            # One row of whole examples packed best-fit to the token budget per micro-step,
            # accumulated to about the requested effective batch (in tokens).
            wanted = hp.batch_size * training.gradient_accumulation_steps * mean_tokens
            batching: dict[str, Any] = {
                "packing": True,
                "packing_strategy": "bfd",
                "max_length": speed.tokens_per_step,
                "per_device_train_batch_size": 1,
                "per_device_eval_batch_size": 1,
                "gradient_accumulation_steps": accumulation_per_rank(max(1, round(wanted / speed.tokens_per_step))),
            }
        else:
            # Examples arrive truncated to max_seq_length; padding-free needs no max_length.
            batching = {
                "padding_free": self.spec.qlora.data.packing,
                "max_length": None,
                "per_device_train_batch_size": hp.batch_size,
                "per_device_eval_batch_size": hp.batch_size,
                "gradient_accumulation_steps": accumulation_per_rank(training.gradient_accumulation_steps),
            }
        return SFTConfig(
            **self.common_args(has_validation, speed),
            completion_only_loss=True,
            use_liger_kernel=speed.liger_kernel,
            # Multitask prompt tuning: the task ids must reach the collator (MultitaskSFTTrainer),
            # but TRL keeps only the token columns.
            remove_unused_columns=not self.spec.qlora.data.tasks,
            **batching,
        )

    def checkpointing(self) -> dict[str, Any]:
        every = self.spec.qlora.training.checkpoint_steps
        if not self.reporter.saves_checkpoints or every == "auto":
            # "auto" saves by training time (JobProgressCallback), pauses save on request.
            return {"save_strategy": "no", "save_total_limit": 1}
        # save_total_limit: locally; each checkpoint is in artifact storage once saved.
        return {"save_strategy": "steps", "save_steps": every, "save_total_limit": 1}

    def resolve_speed(self) -> Speed:
        config = AutoConfig.from_pretrained(self.model_ref.source, trust_remote_code=False)
        speed = resolve_speed(self.spec, self.runtime, ModelShape.from_config(config.to_dict()))
        self.reporter.runtime(self.runtime.describe() | {"speed": speed.describe()})
        return speed

    def based_here(self, config: PeftConfig) -> PeftConfig:
        """A saved adapter's config with the base model where this run loads it from: an
        adapter archive names it by its public id, which peft would look up on the hub
        when it saves the trained adapter (to see whether the vocabulary changed)."""
        config.base_model_name_or_path = self.model_ref.source
        return config

    def described_method(self) -> str:
        hp = self.spec.hparams
        return f"by DPO (beta {hp.beta})" if isinstance(hp, ResolvedDpoHyperparameters) else "supervised"

    # -- train and save --------------------------------------------------------------------
    def run(self, callbacks: tuple[TrainerCallback, ...] = ()) -> TrainResult:
        """`callbacks`: more trainer callbacks (the job's trackers)."""
        prepared = self.load_tokenizer()
        train, valid = self.load_datasets(prepared)
        self.reporter.event(
            f"Loaded {len(train)} training examples"
            + (f" and {len(valid)} validation examples" if valid is not None else "")
            + ("; loss on all tokens" if self.spec.qlora.data.train_on_inputs else "; loss on completions only")
        )
        return self.train(train, valid, prepared.tokenizer, callbacks)

    def train(
        self, train: Dataset, valid: Dataset | None, tokenizer: Any, extra_callbacks: tuple[TrainerCallback, ...] = ()
    ) -> TrainResult:
        """Train on encoded examples (input_ids, completion_mask; or prompt_ids, chosen_ids,
        rejected_ids for preference pairs) and save the adapter."""
        adapter, tasks = self.spec.qlora.adapter, self.spec.qlora.data.tasks
        speed = self.resolve_speed()
        batches = (
            f"packed rows of {speed.tokens_per_step} tokens"
            if speed.tokens_per_step
            else "padding-free batches"
            if self.spec.qlora.data.packing
            else "padded batches"
        )
        how = "in 4 bits" if self.spec.qlora.quantization else "unquantized"
        self.reporter.event(f"Loading {self.model_ref.name} {how} on {self.runtime.device_name}")
        started = time.monotonic()
        model, cache_use = self.load_model(speed)
        seconds = time.monotonic() - started
        self.reporter.event(
            f"Loaded {self.model_ref.name} {how} on {self.runtime.device_name} in {seconds:.1f} s"
            f"{cache_use.said}; "
            f"training a {adapter.type} adapter {self.described_method()} on {batches}"
            f"{', gradient checkpointing' if speed.gradient_checkpointing else ''}"
            f"{', Liger kernels' if speed.liger_kernel else ''}{', fused LoRA' if speed.fused_lora else ''}"
            f", {speed.attention} attention",
            data=speed.describe()
            | {"load_seconds": round(seconds, 2), "process_seconds": round(job_clock.seconds(), 2)}
            | cache_use.describe(),
        )
        callbacks: list[TrainerCallback] = [self.progress, self.progress.trained_tokens, *extra_callbacks]
        if adapter.type == "adalora":
            callbacks.append(AdaLoraBudgetCallback())
        new_adapter, weights_from = None, None
        trained: PreTrainedModel | PeftModel = model
        if self.initial_adapter is None:
            new_adapter = peft_config(
                adapter, self.model_ref.source, planned_steps(self.spec, len(train)), len(tasks or ())
            )
        elif (saved := saved_prompt_learning(self.initial_adapter)) is not None:
            # peft loads a saved prompt-learning adapter for inference only: a new one with
            # its settings is trained, from its weights (loaded once the trainer built it).
            new_adapter, weights_from = self.based_here(saved), self.initial_adapter
        else:
            config = self.based_here(PeftConfig.from_pretrained(str(self.initial_adapter)))
            trained = PeftModel.from_pretrained(model, self.initial_adapter, is_trainable=True, config=config)
        given: dict[str, Any] = {
            "model": trained,
            "train_dataset": train,
            "eval_dataset": valid,
            "processing_class": tokenizer,
            "peft_config": new_adapter,
            "callbacks": callbacks,
        }
        trainer: ResumableSFTTrainer | ResumableDPOTrainer
        try:
            if self.spec.method.type == "dpo":
                # No ref_model: TRL computes the reference log-probabilities with the adapter
                # disabled (the base itself, no second copy of the weights).
                args = dpo_config(self.spec, self.common_args(valid is not None, speed))
                trainer = ResumableDPOTrainer(args=args, **given)
            else:
                mean_tokens = sum(len(ids) for ids in train["input_ids"]) / len(train)
                sft = self.training_args(valid is not None, speed, mean_tokens)
                if tasks:
                    trainer = MultitaskSFTTrainer(args=sft, tasks=tasks, **given)
                else:
                    trainer = ResumableSFTTrainer(args=sft, **given)
        except ValueError as exc:
            raise DataError(f"Cannot prepare training: {exc}", param="qlora") from exc
        if speed.fused_lora:
            fused_lora.fuse(trainer.model)
        if weights_from is not None:
            trainer.load_adapter_weights(weights_from)
        trainer.train(resume_from_checkpoint=str(self.resume_from) if self.resume_from else None)
        steps, stopped = trainer.state.global_step, self.progress.stopped
        adapter_dir = self.workdir / "adapter"
        if stopped is None and valid is not None and self.progress.last_eval_step != steps:
            trainer.evaluate()  # the final evaluation (on every rank), when the schedule did not end on one
        if stopped is None and distributed.is_main():  # the trained adapter, the same on every rank
            peft_model = trainer.model
            assert isinstance(peft_model, PeftModel), "the trainer wraps the model in its adapter"
            peft_model.save_pretrained(str(adapter_dir), safe_serialization=True)
            tokenizer.save_pretrained(adapter_dir)
            if tasks:
                write_tasks(adapter_dir, tasks)
        return TrainResult(adapter_dir, self.progress.trained_tokens.count, steps, stopped, speed)
