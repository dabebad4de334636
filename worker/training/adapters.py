"""The adapter methods of the spec as peft's own config classes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from peft import (
    AdaLoraConfig,
    IA3Config,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    MultitaskPromptTuningConfig,
    PeftConfig,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptTuningConfig,
)
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from core.specs import Adapter, ResolvedSpec

CAUSAL_LM = "CAUSAL_LM"


def planned_steps(spec: ResolvedSpec, n_examples: int) -> int:
    """Optimizer steps the Trainer will take (AdaLoRA's budget schedule needs it upfront)."""
    hp, training = spec.hparams, spec.qlora.training
    if training.max_steps:
        return training.max_steps
    batches = math.ceil(n_examples / hp.batch_size)
    return max(1, math.ceil(batches / training.gradient_accumulation_steps) * hp.n_epochs)


def _prompt_init(init_text: str | None, model_source: str) -> dict[str, Any]:
    """How a soft prompt starts: the embeddings of `init_text`'s tokens, or random."""
    if init_text is None:
        return {"prompt_tuning_init": "RANDOM"}
    return {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": init_text, "tokenizer_name_or_path": model_source}


def peft_config(adapter: Adapter, model_source: str, total_steps: int, num_tasks: int = 0) -> PeftConfig:
    """`num_tasks`: the tasks of a multitask prompt-tuning adapter's data."""
    a: Any = adapter
    if a.type == "lora":
        return LoraConfig(
            r=a.r,
            lora_alpha=a.alpha,
            lora_dropout=a.dropout,
            target_modules=a.target_modules,
            use_dora=a.use_dora,
            use_rslora=a.use_rslora,
            bias="none",
            task_type=CAUSAL_LM,
        )
    if a.type == "adalora":
        return AdaLoraConfig(
            init_r=a.init_r,
            target_r=a.target_r,
            lora_alpha=a.alpha,
            lora_dropout=a.dropout,
            target_modules=a.target_modules,
            total_step=total_steps,
            deltaT=a.delta_t,
            tinit=int(a.tinit_fraction * total_steps),
            tfinal=int(a.tfinal_fraction * total_steps),
            task_type=CAUSAL_LM,
        )
    if a.type == "ia3":
        return IA3Config(
            target_modules=a.target_modules, feedforward_modules=a.feedforward_modules, task_type=CAUSAL_LM
        )
    if a.type == "loha":
        return LoHaConfig(
            r=a.r,
            alpha=a.alpha,
            rank_dropout=a.rank_dropout,
            module_dropout=a.module_dropout,
            target_modules=a.target_modules,
            task_type=CAUSAL_LM,
        )
    if a.type == "lokr":
        return LoKrConfig(
            r=a.r,
            alpha=a.alpha,
            rank_dropout=a.rank_dropout,
            module_dropout=a.module_dropout,
            target_modules=a.target_modules,
            decompose_both=a.decompose_both,
            task_type=CAUSAL_LM,
        )
    if a.type == "prompt_tuning":
        init = _prompt_init(a.init_text, model_source)
        return PromptTuningConfig(num_virtual_tokens=a.num_virtual_tokens, task_type=CAUSAL_LM, **init)
    if a.type == "multitask_prompt_tuning":
        return MultitaskPromptTuningConfig(
            num_virtual_tokens=a.num_virtual_tokens,
            num_ranks=a.num_ranks,
            num_tasks=num_tasks,
            task_type=CAUSAL_LM,
            **_prompt_init(a.init_text, model_source),
        )
    if a.type == "prefix_tuning":
        return PrefixTuningConfig(
            num_virtual_tokens=a.num_virtual_tokens,
            prefix_projection=a.prefix_projection,
            encoder_hidden_size=a.encoder_hidden_size,
            task_type=CAUSAL_LM,
        )
    return PromptEncoderConfig(
        num_virtual_tokens=a.num_virtual_tokens,
        encoder_hidden_size=a.encoder_hidden_size,
        encoder_reparameterization_type=a.encoder_reparameterization_type,
        task_type=CAUSAL_LM,
    )


def saved_prompt_learning(adapter_dir: Path) -> PeftConfig | None:
    """The settings of a saved prompt-learning adapter, for a new trainable one that
    starts from its weights (peft loads a saved prompt-learning adapter for inference
    only); None for any other adapter, which peft loads trainable itself."""
    config: PeftConfig = PeftConfig.from_pretrained(str(adapter_dir))
    if not config.is_prompt_learning:
        return None
    config.inference_mode = False
    if isinstance(config, PromptTuningConfig):  # multitask prompt tuning's too
        # The saved weights replace the initial prompt: its init text (and the tokenizer
        # path it names, of the worker that trained it) is not read.
        config.prompt_tuning_init = "RANDOM"
    return config


class AdaLoraBudgetCallback(TrainerCallback):
    """AdaLoRA reallocates ranks from the gradients after each optimizer step; the
    Trainer has no hook of its own for it (peft's documented training-loop call)."""

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **_: Any
    ) -> None:
        model.base_model.update_and_allocate(state.global_step)
