"""A resume that restores the adapter weights exactly as they were trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import get_peft_model_state_dict, set_peft_model_state_dict
from peft.utils import SAFETENSORS_WEIGHTS_NAME as SAFE_ADAPTER_WEIGHTS
from safetensors.torch import load_file

from worker.training.failures import DataError


class ExactAdapterResume:
    """Mixed into a TRL trainer (SFT, DPO): TRL trains a quantized model's adapter in
    bf16, but the Trainer's resume reloads the adapter through PEFT's `load_adapter`,
    which upcasts it to fp32: the resumed run would then train in another precision than
    the run it continues. Here the saved weights are copied into the existing
    parameters, which keep their dtype."""

    model: Any

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        self.load_adapter_weights(Path(resume_from_checkpoint), model or self.model)

    def load_adapter_weights(self, adapter_dir: Path, model: Any = None) -> None:
        """The weights of the adapter saved in `adapter_dir`, copied into the model's."""
        weights = load_file(adapter_dir / SAFE_ADAPTER_WEIGHTS)
        model = model or self.model
        # The adapter's own keys, as it saves them: set_peft_model_state_dict's
        # unexpected_keys also lists those a prompt-learning adapter's encoder loads itself.
        unexpected = sorted(set(weights) - set(get_peft_model_state_dict(model)))
        if unexpected:
            raise DataError(f"The checkpoint does not fit this adapter: {unexpected[:3]}", param="qlora")
        set_peft_model_state_dict(model, weights)
