"""Fuzzing of upload validation (hypothesis; tests/fuzz/strategies.py makes the files):
every format in every file type, damaged in its values (deep nesting, numbers past
every limit, lone surrogates, NUL, huge strings, wrong types) and in its bytes
(truncated, re-encoded as Latin-1 or UTF-16, spliced with invalid UTF-8, a corrupt
Parquet footer). Validation must answer each with a report, never an exception, and
what it accepts must read back as valid Unicode examples; a sample goes through the
real `POST /v1/files`, which must answer 2xx or 4xx with the standard error body.

CI runs a bounded number of examples with a fixed seed, so a run is reproducible. A
longer run, with another seed:

    FUZZ_UPLOAD_EXAMPLES=20000 FUZZ_UPLOAD_SEED=$RANDOM ./scripts/test tests/fuzz
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings

from core.datasets import MAX_MESSAGE_CHARS, detect_file_type, iter_examples, validate
from tests.conftest import TEST_ORG, make_client
from tests.fuzz.strategies import RawMultipart, Upload, multipart_bodies, uploads
from tests.helpers import assert_error, upload

FUZZ_UPLOAD_EXAMPLES = int(os.environ.get("FUZZ_UPLOAD_EXAMPLES", "3000"))
FUZZ_UPLOAD_SEED = int(os.environ.get("FUZZ_UPLOAD_SEED", "11"))
# Each HTTP upload also stores the bytes and a row: a sample of the examples.
HTTP_EXAMPLES = max(1, FUZZ_UPLOAD_EXAMPLES // 10)

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_UPLOAD_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def _storable(text: str) -> bool:
    """Postgres text takes it: valid Unicode without NUL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@FUZZ_SETTINGS
@seed(FUZZ_UPLOAD_SEED)
@given(uploads())
def test_validation_reports_on_every_file(upload: Upload) -> None:
    file_type = detect_file_type(upload.filename, upload.content[:512])
    report = validate(io.BytesIO(upload.content), file_type, upload.format_name)

    json.dumps(report.problems_json())  # stored as JSON with the file's row
    for problem in report.problems:
        assert problem.message and _storable(problem.message), problem
        assert len(problem.message) <= MAX_MESSAGE_CHARS, problem
    if report.ok:  # what was accepted reads back, as training will read it
        assert report.format is not None
        examples = list(iter_examples(io.BytesIO(upload.content), file_type, report.format))
        assert len(examples) == report.n_examples
        for example in examples:
            texts = [example.text] if example.text is not None else [m.content for m in example.messages]
            for text in texts:  # a tokenizer takes it (NUL is text like any other)
                assert isinstance(text, str) and _storable(text.replace("\x00", "")), example


@pytest.fixture(scope="module")
def api(api_keys: dict[str, str]) -> Iterator[Any]:
    with make_client(api_keys[TEST_ORG]) as client:
        yield client


@settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
@seed(FUZZ_UPLOAD_SEED)
@given(case=uploads())
def test_every_upload_answers_2xx_or_4xx_with_the_error_body(api: Any, case: Upload) -> None:
    data_format = None if case.format_name == "auto" else case.format_name
    response = upload(api, case.content, case.filename, data_format=data_format)
    if response.status_code == 200:
        assert response.json()["status"] == "processed", response.text
    else:
        error = assert_error(response, 400, param="file", code="invalid_file")
        assert error["file"]["status"] == "error" and error["details"], error


@settings(FUZZ_SETTINGS, max_examples=HTTP_EXAMPLES)
@seed(FUZZ_UPLOAD_SEED)
@given(request=multipart_bodies())
def test_malformed_multipart_answers_4xx_with_the_error_body(api: Any, request: RawMultipart) -> None:
    response = api.post("/v1/files", content=request.body, headers={"Content-Type": request.content_type.encode()})
    if response.status_code != 200:
        error = assert_error(response, response.status_code)
        assert 400 <= response.status_code < 500, error
