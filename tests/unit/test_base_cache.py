"""A worker's pre-quantized bases (worker.training.base_cache): the second load of a base
is the same model as the first, read from the cache; a damaged copy is found by its
hashes and replaced; each quantization setting has its own copy; the least recently
used copies go; 0 entries turns the cache off; a failed write does not fail the load."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from core.registry import ModelRef
from core.specs import JobSpec, resolve
from tests.helpers import changed_settings
from worker.training import base_cache
from worker.training.base_cache import MANIFEST, CacheUse
from worker.training.recipe import load_base_model
from worker.training.reporting import ConsoleReporter
from worker.training.runtime import Runtime

RUNTIME = Runtime("cpu", "cpu", "float32", 1 << 30)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    with changed_settings(FTSVC_BASE_CACHE_DIR=str(tmp_path / "cache"), FTSVC_BASE_CACHE_ENTRIES="2"):
        yield tmp_path / "cache"


def load(tiny_model: Path, **quantization: Any) -> tuple[PreTrainedModel, CacheUse]:
    spec = JobSpec.model_validate(
        {"model": "tiny-llama", "training_file": "file-x", "qlora": {"quantization": quantization}}
    )
    resolved = resolve(spec, n_examples=10, seed=1, data_format="chat")
    ref = ModelRef("tiny-llama", str(tiny_model), True)
    return load_base_model(resolved, ref, RUNTIME, "sdpa", ConsoleReporter())


def entries(cache_dir: Path) -> set[str]:
    return {p.name for p in cache_dir.iterdir() if not p.name.startswith(".")}


Fingerprint = tuple[dict[str, torch.Tensor], torch.Tensor]


def fingerprint(model: PreTrainedModel) -> Fingerprint:
    """The 4-bit weights, their quantization states (absmax, quant maps: in the state dict)
    and every other tensor, then the logits of a few tokens. Taken before the model ran
    anything else: bitsandbytes repacks 4-bit weights for its CPU kernel at the first
    forward pass, which changes the state dict (not the logits)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(k.endswith(".absmax") for k in state)
    with torch.no_grad():
        return state, model(torch.tensor([[1, 5, 7, 9, 11, 13]])).logits


def assert_same(a: Fingerprint, b: Fingerprint) -> None:
    """Bitwise equal."""
    assert a[0].keys() == b[0].keys()
    assert [k for k in a[0] if not torch.equal(a[0][k], b[0][k])] == []
    assert torch.equal(a[1], b[1])


def test_the_second_load_is_the_same_model_from_the_cache(tiny_model: Path, cache_dir: Path) -> None:
    model, first = load(tiny_model)
    fresh = fingerprint(model)
    assert first.outcome == "stored" and first.describe()["base_cache_store_seconds"] >= 0
    [entry] = entries(cache_dir)
    assert (cache_dir / entry / MANIFEST).is_file() and (cache_dir / entry / "config.json").is_file()
    cached, second = load(tiny_model)
    assert second.outcome == "hit" and second.describe()["base_cache_check_seconds"] >= 0
    assert_same(fresh, fingerprint(cached))
    assert type(cached.model.layers[0].mlp.up_proj.weight).__name__ == "Params4bit"
    # Adapters record the base they were trained on: the source, not the cache.
    assert cached.name_or_path == cached.config._name_or_path == str(tiny_model)
    assert cached.config.to_dict() == model.config.to_dict()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_copy_is_found_reported_and_replaced(
    tiny_model: Path, cache_dir: Path, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = fingerprint(load(tiny_model)[0])
    [entry] = entries(cache_dir)
    weights = cache_dir / entry / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "flipped byte":
        data[-100] ^= 0xFF
    else:
        del data[-100:]
    weights.write_bytes(bytes(data))
    reloaded, use = load(tiny_model)
    assert use.outcome == "stored"  # quantized from the source again, and stored again
    warning = capsys.readouterr().out
    assert "[warn] This worker's pre-quantized copy of tiny-llama is damaged" in warning
    assert ("model.safetensors: sha256 differs" if damage == "flipped byte" else "sizes differ") in warning
    assert_same(fresh, fingerprint(reloaded))
    cached, use = load(tiny_model)
    assert use.outcome == "hit"
    assert_same(fresh, fingerprint(cached))


def test_each_quantization_has_its_copy_and_the_least_recently_used_goes(tiny_model: Path, cache_dir: Path) -> None:
    assert load(tiny_model)[1].outcome == "stored"
    [nf4] = entries(cache_dir)
    assert load(tiny_model, quant_type="fp4")[1].outcome == "stored"
    [fp4] = entries(cache_dir) - {nf4}
    assert load(tiny_model)[1].outcome == "hit"  # nf4 is now the most recently used
    assert load(tiny_model, double_quant=False)[1].outcome == "stored"
    assert len(entries(cache_dir)) == 2 and nf4 in entries(cache_dir) and fp4 not in entries(cache_dir)
    assert load(tiny_model, double_quant=False)[1].outcome == "hit"


def test_no_entries_turns_the_cache_off_and_unquantized_loads_bypass_it(tiny_model: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with changed_settings(FTSVC_BASE_CACHE_DIR=str(cache_dir), FTSVC_BASE_CACHE_ENTRIES="0"):
        assert load(tiny_model)[1].describe() == {"base_cache": "off"}
    assert not cache_dir.exists()
    spec = JobSpec.model_validate({"model": "tiny-llama", "training_file": "file-x", "qlora": {"quantization": None}})
    resolved = resolve(spec, n_examples=10, seed=1, data_format="chat")
    ref = ModelRef("tiny-llama", str(tiny_model), True)
    with changed_settings(FTSVC_BASE_CACHE_DIR=str(cache_dir)):
        assert load_base_model(resolved, ref, RUNTIME, "sdpa", ConsoleReporter())[1].outcome == "off"
    assert not cache_dir.exists()


def test_a_failed_write_warns_and_the_load_goes_on(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with changed_settings(FTSVC_BASE_CACHE_DIR=str(blocker / "cache")):
        model, use = load(tiny_model)
    assert use.outcome == "unstored" and model.is_loaded_in_4bit
    assert "[warn] Could not store a pre-quantized copy of tiny-llama on this worker" in capsys.readouterr().out


def test_a_writer_that_finishes_second_keeps_the_first_ones_entry(tiny_model: Path, cache_dir: Path) -> None:
    """Two ranks or two jobs quantize the same base at once: both write, one rename wins."""
    model, _ = load(tiny_model)
    [entry] = entries(cache_dir)
    manifest = (cache_dir / entry / MANIFEST).read_text()
    base_cache._store(model, cache_dir / entry)  # the loser: its staging directory goes
    assert [p.name for p in cache_dir.iterdir()] == [entry]
    assert (cache_dir / entry / MANIFEST).read_text() == manifest
    assert load(tiny_model)[1].outcome == "hit"


def test_a_base_stored_in_4_bits_is_loaded_as_it_is(tiny_model: Path, cache_dir: Path, tmp_path: Path) -> None:
    """A source that is a 4-bit copy already (an entry's layout, as the 70B benchmark
    model is written) needs no second copy: it loads as it is and nothing is stored."""
    first, _ = load(tiny_model)
    entry = next(p for p in cache_dir.iterdir() if not p.name.startswith("."))
    four_bit = tmp_path / "four-bit-base"
    shutil.copytree(entry, four_bit)
    expected = fingerprint(first)
    spec = resolve(
        JobSpec.model_validate({"model": "tiny-4bit", "training_file": "file-x"}),
        n_examples=10,
        seed=1,
        data_format="chat",
    )
    model, use = load_base_model(spec, ModelRef("tiny-4bit", str(four_bit), True), RUNTIME, "sdpa", ConsoleReporter())
    assert use.outcome == "prequantized" and entries(cache_dir) == {entry.name}
    assert_same(expected, fingerprint(model))
