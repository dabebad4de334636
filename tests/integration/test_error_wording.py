"""Errors in the client's terms: every field of the job spec, sent with a value of the
wrong type (and, where it takes numbers or fixed words, a word it does not take), is
refused with 400, the field as the client wrote it, and a message without pydantic's
internals (union branch names, discriminator functions, patterns, "Input should")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.specs import ADAPTER_TYPES, JobSpec
from tests.helpers import assert_error

SPEC = JobSpec.model_json_schema()
INTERNALS = re.compile(
    r"Input should|_adapter_type|literal\[|constrained-|function-|union|tag '|Value error|[\^$]|pydantic|\[type="
)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    return SPEC["$defs"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema


def _members(schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema)
    return [_resolve(m) for m in schema.get("anyOf") or schema.get("oneOf") or [schema]]


def _objects(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in _members(schema) if "properties" in m]


def _fields(
    schema: dict[str, Any], path: tuple[str, ...] = (), pins: tuple[tuple[tuple[str, ...], str], ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any], tuple[tuple[tuple[str, ...], str], ...]]]:
    """Every field of the spec: its path, its schema, and the values it needs beside it
    (a variant of a tagged union needs its `type`)."""
    variants = _objects(schema)
    for variant in variants:
        tag = variant["properties"].get("type", {}).get("const") if len(variants) > 1 else None
        here_pins = (*pins, (path + ("type",), tag)) if tag else pins
        for name, field in variant["properties"].items():
            if name == "type" and tag:
                continue  # the tag itself: tested below
            yield path + (name,), field, here_pins
            yield from _fields(field, path + (name,), here_pins)


def _wrong_values(field: dict[str, Any]) -> list[Any]:
    members = _members(field)
    takes_objects = any(m.get("type") == "object" or "properties" in m for m in members)
    takes_any_string = any(m.get("type") == "string" and "const" not in m and "enum" not in m for m in members)
    values: list[Any] = ["not-an-object" if takes_objects else {"not": "this"}]
    if not takes_any_string and not takes_objects:
        values.append("bogus")
    return values


def _body(path: tuple[str, ...], value: Any, pins: tuple[tuple[tuple[str, ...], str], ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny-llama", "training_file": "file-x"}
    for where, what in (*pins, (path, value)):
        node = body
        for part in where[:-1]:
            node = node.setdefault(part, {})
        node[where[-1]] = what
    return body


CASES = [
    pytest.param(_body(path, value, pins), ".".join(path), id=f"{'.'.join(path)}={value!r}")
    for path, field, pins in _fields(SPEC)
    for value in _wrong_values(field)
]


def test_the_cases_cover_every_part_of_the_spec() -> None:
    params = {case.values[1] for case in CASES}
    assert {"model", "seed", "method.type", "method.supervised.hyperparameters.n_epochs"} <= params
    assert {"qlora.adapter.r", "qlora.adapter.init_r", "qlora.adapter.encoder_reparameterization_type"} <= params
    assert {"qlora.performance.tokens_per_step", "qlora.data.packing", "hyperparameters.batch_size"} <= params
    assert len(CASES) > 100


def assert_in_user_terms(error: dict[str, Any]) -> None:
    for text in [error["message"], *(d["message"] for d in error.get("details") or [])]:
        assert not INTERNALS.search(text), text


@pytest.mark.parametrize(("body", "param"), CASES)
def test_every_wrong_value_is_refused_in_the_clients_terms(client_module: TestClient, body, param) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json=body), 400)
    assert error["param"] is not None and error["param"].startswith(param), error
    assert error["message"].startswith(f"{error['param']}: ")
    assert_in_user_terms(error)


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        (
            {"qlora": {"adapter": {"type": "full"}}},
            "qlora.adapter.type",
            f"unknown adapter type 'full'; one of: {', '.join(ADAPTER_TYPES)}",
        ),
        ({"qlora": {"adapter": "lora"}}, "qlora.adapter", 'must be an object, e.g. {"type": "lora"}'),
        (
            {"method": {"supervised": {"hyperparameters": {"n_epochs": 100}}}},
            "method.supervised.hyperparameters.n_epochs",
            "must be at most 50 or 'auto' (got 100)",
        ),
        (
            {"method": {"supervised": {"hyperparameters": {"n_epochs": "many"}}}},
            "method.supervised.hyperparameters.n_epochs",
            "must be an integer or 'auto' (got \"many\")",
        ),
        (
            {"qlora": {"adapter": {"target_modules": "attention"}}},
            "qlora.adapter.target_modules",
            "must be 'all-linear' or a list (got \"attention\")",
        ),
        (
            {"qlora": {"adapter": {"target_modules": ["q proj"]}}},
            "qlora.adapter.target_modules[0]",
            "must be a module name (letters, digits, '_' and '.') (got \"q proj\")",
        ),
        ({"suffix": "has spaces"}, "suffix", "must be 1 to 64 letters, digits, '_' or '-' (got \"has spaces\")"),
        ({"qlora": {"quantization": {"quant_type": "int8"}}}, "qlora.quantization.quant_type", "must be 'nf4' or"),
        ({"qlora": {"adapter": {"type": "adalora", "init_r": 4, "target_r": 8}}}, "qlora.adapter", "target_r"),
        ({"qlora": {"adapter": {"type": "ia3", "r": 8}}}, "qlora.adapter.r", "not a parameter of the ia3 adapter"),
        ({"metadata": {"team": 7}}, "metadata.team", "must be a string (got 7)"),
        ({"qlora": {"data": {"validation_split": 0.7}}}, "qlora.data.validation_split", "must be less than 0.5"),
        ({"training_file": None}, "training_file", "must be a string"),
        ({"model": ""}, "model", "must be at least 1 characters long"),
    ],
)
def test_wordings(client_module: TestClient, change: dict[str, Any], param: str, message: str) -> None:
    body = {"model": "tiny-llama", "training_file": "file-x", **change}
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json=body), 400, param)
    assert error["message"].startswith(f"{param}: {message}"), error["message"]
    assert_in_user_terms(error)


def test_a_body_that_is_not_an_object_and_a_missing_field(client_module: TestClient) -> None:
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json=[1, 2]), 400)
    assert error["message"] == "The request body must be an object" and error["param"] is None
    error = assert_error(client_module.post("/v1/fine_tuning/jobs", json={"model": "tiny-llama"}), 400, "training_file")
    assert error["message"] == "training_file: required"


@pytest.mark.parametrize(
    ("path", "params", "param", "message"),
    [
        ("/v1/fine_tuning/jobs", {"limit": "ten"}, "limit", 'limit: must be an integer (got "ten")'),
        ("/v1/fine_tuning/jobs", {"limit": "0"}, "limit", 'limit: must be at least 1 (got "0")'),
        ("/v1/files", {"limit": "1000"}, "limit", 'limit: must be at most 100 (got "1000")'),
    ],
)
def test_query_parameters_in_the_clients_terms(client_module: TestClient, path, params, param, message) -> None:  # type: ignore[no-untyped-def]
    error = assert_error(client_module.get(path, params=params), 400, param)
    assert error["message"] == message
    assert_in_user_terms(error)
