import pytest
from pydantic import ValidationError

from core.specs import Hyperparameters, JobSpec, ResolvedHyperparameters, ResolvedSpec, resolve, resolve_hyperparameters


def spec(**extra):  # type: ignore[no-untyped-def]
    return JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x", **extra})


def test_defaults_follow_the_qlora_recipe() -> None:
    q = spec().qlora
    assert (q.quantization.bits, q.quantization.quant_type, q.quantization.double_quant) == (4, "nf4", True)
    assert q.quantization.compute_dtype == "auto"
    assert (q.adapter.r, q.adapter.alpha, q.adapter.target_modules) == (16, 32, "all-linear")
    assert q.training.learning_rate == 2e-4


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}}, "n_epochs"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 1000}}}}, "batch_size"),
        ({"qlora": {"adapter": {"r": 0}}}, "r"),
        ({"qlora": {"adapter": {"dropout": 1.5}}}, "dropout"),
        ({"qlora": {"quantization": {"bits": 8}}}, "bits"),
        ({"qlora": {"quantization": {"quant_type": "int4"}}}, "quant_type"),
        ({"qlora": {"training": {"learning_rate": 0}}}, "learning_rate"),
        ({"qlora": {"training": {"max_seq_length": 4}}}, "max_seq_length"),
        ({"qlora": {"adapter": {"rank": 8}}}, "rank"),
        ({"suffix": "has spaces"}, "suffix"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ],
)
def test_out_of_range_and_unknown_fields_are_refused(body: dict, loc: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**body)
    assert loc in {str(part) for part in info.value.errors()[0]["loc"]}


def test_auto_rule() -> None:
    auto = Hyperparameters()
    resolved = ResolvedHyperparameters
    assert resolve_hyperparameters(auto, 36, 2048) == resolved(n_epochs=9, batch_size=8, learning_rate_multiplier=1.0)
    assert resolve_hyperparameters(auto, 10_000, 512) == resolved(n_epochs=1, batch_size=16, learning_rate_multiplier=1)
    assert resolve_hyperparameters(auto, 2, 8192).batch_size == 1
    fixed = Hyperparameters(n_epochs=2, batch_size=3, learning_rate_multiplier=0.5)
    assert resolve_hyperparameters(fixed, 36, 2048) == resolved(n_epochs=2, batch_size=3, learning_rate_multiplier=0.5)


def test_resolving_merges_legacy_hyperparameters_and_sets_seed_format_and_packing() -> None:
    resolved = resolve(spec(hyperparameters={"n_epochs": 4}), n_examples=100, seed=7, data_format="qa")
    assert isinstance(resolved, ResolvedSpec) and "hyperparameters" not in resolved.model_dump()
    assert resolved.seed == 7
    assert resolved.hparams == ResolvedHyperparameters(n_epochs=4, batch_size=8, learning_rate_multiplier=1.0)
    assert (resolved.qlora.data.format, resolved.qlora.data.packing) == ("qa", True)
    prompt = resolve(spec(qlora={"adapter": {"type": "prompt_tuning"}}), n_examples=100, seed=7, data_format="qa")
    assert prompt.qlora.data.packing is False
    # What is stored with the job reads back as the same resolved spec.
    assert ResolvedSpec.model_validate(resolved.model_dump(mode="json")) == resolved


def test_a_checkpoints_adapter_and_quantization_replace_the_asked_ones() -> None:
    trained = resolve(spec(qlora={"adapter": {"r": 4}}), n_examples=10, seed=1, data_format="chat").qlora
    resolved = resolve(spec(qlora={"adapter": {"r": 64}}), n_examples=10, seed=1, data_format="chat", trained=trained)
    assert resolved.qlora.adapter == trained.adapter and resolved.qlora.quantization == trained.quantization
