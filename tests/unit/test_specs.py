import pytest
from pydantic import ValidationError

from core.errors import InvalidRequest
from core.specs import (
    Hyperparameters,
    JobSpec,
    ResolvedHyperparameters,
    ResolvedSpec,
    SpecError,
    Training,
    check_data_fits_method,
    resolve,
    resolve_hyperparameters,
)


def spec(**extra):  # type: ignore[no-untyped-def]
    return JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x", **extra})


def test_defaults_follow_the_qlora_recipe() -> None:
    q = spec().qlora
    assert (q.quantization.bits, q.quantization.quant_type, q.quantization.double_quant) == (4, "nf4", True)
    assert q.quantization.compute_dtype == "auto"
    assert (q.adapter.r, q.adapter.alpha, q.adapter.target_modules) == (16, 32, "all-linear")
    assert q.training.learning_rate == 2e-4
    assert q.resources.gpus == 1


def test_gpus_reach_the_resolved_spec_and_older_stored_specs_have_one() -> None:
    resolved = resolve(spec(qlora={"resources": {"gpus": 4}}), n_examples=10, seed=1, data_format="chat")
    assert resolved.qlora.resources.gpus == 4
    stored = resolved.model_dump(mode="json")
    del stored["qlora"]["resources"]  # a job created before multi-GPU jobs existed
    assert ResolvedSpec.model_validate(stored).qlora.resources.gpus == 1


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
    default = Training()
    assert resolve_hyperparameters(auto, 36, default) == resolved(
        n_epochs=9, batch_size=8, learning_rate_multiplier=1.0
    )
    short = Training(max_seq_length=512)
    assert resolve_hyperparameters(auto, 10_000, short) == resolved(
        n_epochs=1, batch_size=16, learning_rate_multiplier=1
    )
    assert resolve_hyperparameters(auto, 2, Training(max_seq_length=8192)).batch_size == 1
    fixed = Hyperparameters(n_epochs=2, batch_size=3, learning_rate_multiplier=0.5)
    assert resolve_hyperparameters(fixed, 36, default) == resolved(
        n_epochs=2, batch_size=3, learning_rate_multiplier=0.5
    )


@pytest.mark.parametrize(
    ("max_steps", "accumulation", "epochs"),
    # 36 examples in batches of 8: 5 batches per epoch (the last one of 4), as the trainer counts them.
    [(30, 1, 6), (31, 1, 7), (5, 1, 1), (3, 2, 1), (4, 2, 2), (1000, 1, 200)],
)
def test_with_max_steps_auto_epochs_are_the_epochs_the_steps_start(
    max_steps: int, accumulation: int, epochs: int
) -> None:
    training = Training(max_steps=max_steps, gradient_accumulation_steps=accumulation)
    assert resolve_hyperparameters(Hyperparameters(), 36, training).n_epochs == epochs


def test_n_epochs_and_max_steps_together_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        spec(method={"supervised": {"hyperparameters": {"n_epochs": 3}}}, qlora={"training": {"max_steps": 20}})
    error = info.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, SpecError) and error.param == "qlora.training.max_steps"
    with pytest.raises(ValidationError):
        spec(hyperparameters={"n_epochs": 3}, qlora={"training": {"max_steps": 20}})  # the legacy field too
    assert spec(qlora={"training": {"max_steps": 20}}).qlora.training.max_steps == 20


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


def test_dpo_method_in_openais_shape_resolves_beta_auto_to_0_1() -> None:
    asked = spec(method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 2, "beta": "auto"}}})
    resolved = resolve(asked, n_examples=40, seed=1, data_format="preference")
    assert resolved.method.type == "dpo" and resolved.method.supervised is None
    assert resolved.method.dpo is not None and resolved.method.dpo.hyperparameters.beta == 0.1
    assert resolved.hparams.n_epochs == 2 and resolved.hparams.batch_size == 8
    assert resolved.qlora.data.packing is False  # pairs train on padded batches
    assert ResolvedSpec.model_validate(resolved.model_dump(mode="json")) == resolved
    given = resolve(
        spec(method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.5}}}),
        n_examples=40,
        seed=1,
        data_format="preference",
    )
    assert given.method.dpo is not None and given.method.dpo.hyperparameters.beta == 0.5
    bare = spec(method={"type": "dpo"})
    assert bare.method.dpo is not None and bare.method.supervised is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"method": {"type": "dpo", "supervised": {}}}, "method.supervised is given but method.type is 'dpo'"),
        ({"method": {"type": "supervised", "dpo": {}}}, "method.dpo is given but method.type is 'supervised'"),
        ({"method": {"type": "dpo"}, "hyperparameters": {"n_epochs": 2}}, "give them in method.dpo"),
        ({"method": {"type": "dpo"}, "qlora": {"performance": {"tokens_per_step": 4096}}}, "tokens_per_step"),
        ({"method": {"type": "dpo"}, "qlora": {"data": {"packing": True}}}, "qlora.data.packing"),
        ({"method": {"type": "dpo"}, "qlora": {"adapter": {"type": "prompt_tuning"}}}, "prompt_tuning"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}}, "greater than 0"),
        ({"method": {"type": "orpo"}}, "'supervised' or 'dpo'"),
    ],
)
def test_dpo_spec_errors_say_which_field(body: dict, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**body)
    assert words in str(info.value)


def test_preference_data_and_methods_must_match() -> None:
    check_data_fits_method("dpo", "preference", "training_file", "file-x")
    check_data_fits_method("supervised", "chat", "training_file", "file-x")
    with pytest.raises(InvalidRequest) as dpo_on_chat:
        check_data_fits_method("dpo", "chat", "training_file", "file-x")
    assert (dpo_on_chat.value.param, dpo_on_chat.value.code) == ("training_file", "method_data_mismatch")
    assert "format 'chat'" in dpo_on_chat.value.message
    with pytest.raises(InvalidRequest) as sft_on_pairs:
        check_data_fits_method("supervised", "preference", "validation_file", "file-y")
    assert sft_on_pairs.value.param == "validation_file" and "method.type 'dpo'" in sft_on_pairs.value.message


def test_multitask_prompt_tuning_resolves_with_its_tasks_and_one_example_per_row() -> None:
    asked = spec(qlora={"adapter": {"type": "multitask_prompt_tuning", "num_virtual_tokens": 8, "init_text": "Do it"}})
    adapter = asked.qlora.adapter
    assert (adapter.type, adapter.num_virtual_tokens, adapter.num_ranks) == ("multitask_prompt_tuning", 8, 1)
    resolved = resolve(asked, n_examples=40, seed=1, data_format="chat", tasks=["a", "b"])
    assert resolved.qlora.data.tasks == ["a", "b"] and resolved.qlora.data.packing is False
    assert ResolvedSpec.model_validate(resolved.model_dump(mode="json")) == resolved
    # Specs stored before tasks existed read back without them.
    stored = resolve(spec(), n_examples=40, seed=1, data_format="chat").model_dump(mode="json")
    del stored["qlora"]["data"]["tasks"]
    assert ResolvedSpec.model_validate(stored).qlora.data.tasks is None


@pytest.mark.parametrize(
    ("qlora", "method", "words"),
    [
        ({"data": {"packing": True}}, None, "needs one example per row"),
        ({"performance": {"tokens_per_step": 4096}}, None, "cannot train on token-budget batches"),
        ({"adapter": {"num_ranks": 0}}, None, "greater than or equal to 1"),
        ({"adapter": {"num_tasks": 3}}, None, "Extra inputs are not permitted"),
        ({}, {"type": "dpo"}, "multitask_prompt_tuning is not supported"),
    ],
)
def test_multitask_prompt_tuning_refusals(qlora: dict, method: dict | None, words: str) -> None:
    body = {"qlora": qlora | {"adapter": {"type": "multitask_prompt_tuning", **qlora.get("adapter", {})}}}
    with pytest.raises(ValidationError) as info:
        spec(**body, **({"method": method} if method else {}))
    assert words in str(info.value)
