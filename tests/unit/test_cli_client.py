"""The client commands' own logic, without a server: the job spec from a file and flags,
where the server and key come from, and the file name a download may take."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from ftsvc.client.connection import connection
from ftsvc.client.download import attachment_name, destination
from ftsvc.client.errors import ApiError, ClientError
from ftsvc.client.jobs import job_spec, read_spec


def test_flags_override_the_spec_and_hyperparameters_go_to_its_method(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "model: base\nmethod: {type: dpo, dpo: {hyperparameters: {beta: 0.2}}}\nqlora: {training: {max_steps: 5}}\n"
    )
    spec = read_spec(path)
    merged = job_spec(
        spec,
        {("model",): "tiny-llama", ("suffix",): None, ("qlora", "training", "max_steps"): 7, ("metadata", "team"): "a"},
        {"n_epochs": None, "batch_size": 4, "beta": None},
    )
    assert merged == {
        "model": "tiny-llama",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "batch_size": 4}}},
        "qlora": {"training": {"max_steps": 7}},
        "metadata": {"team": "a"},
    }
    assert spec["qlora"]["training"]["max_steps"] == 5  # the file's spec is left as it was
    assert job_spec({}, {}, {"n_epochs": 2}) == {"method": {"supervised": {"hyperparameters": {"n_epochs": 2}}}}


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("spec.json", '{"model": ', "cannot read the spec"),
        ("spec.yaml", "model: [unclosed", "cannot read the spec"),
        ("spec.yaml", "- a list\n", "must hold an object"),
        ("spec.json", '{"qlora": 3}', "the spec's qlora must be an object"),
    ],
)
def test_a_spec_that_cannot_be_used_is_one_line(tmp_path: Path, name: str, content: str, said: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ClientError) as raised:
        job_spec(read_spec(path), {("qlora", "training", "max_steps"): 1}, {})
    assert said in raised.value.message and "\n" not in raised.value.message


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("FTSVC_BASE_URL", "FTSVC_API_KEY", "FTSVC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "ftsvc" / "config.toml"


def test_the_key_comes_from_the_flag_then_the_environment_then_the_config_file(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean_environment.parent.mkdir(parents=True)
    clean_environment.write_text('base_url = "https://ft.example/v1"\napi_key = "ftsk-config"\n')
    found = connection(None, None)
    assert (found.base_url, found.api_key) == ("https://ft.example/v1", "ftsk-config")
    monkeypatch.setenv("FTSVC_API_KEY", "ftsk-env")
    monkeypatch.setenv("FTSVC_BASE_URL", "http://10.1.2.3:8000/v1")
    found = connection(None, None)
    assert (found.base_url, found.api_key, found.key_source) == ("http://10.1.2.3:8000/v1", "ftsk-env", "FTSVC_API_KEY")
    found = connection("http://h/v1", "ftsk-flag")
    assert (found.base_url, found.api_key, found.key_source) == ("http://h/v1", "ftsk-flag", "--api-key")


def test_the_local_key_never_goes_to_another_machine(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "local-api-key").write_text("ftsk-local\n")
    monkeypatch.setenv("FTSVC_DATA_DIR", str(tmp_path / "var"))
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        assert connection(None, None).api_key == "ftsk-local"
        assert connection("http://localhost:9000/v1", None).api_key == "ftsk-local"
        with pytest.raises(ClientError, match="no API key for https://ft.example/v1"):
            connection("https://ft.example/v1", None)
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("content", "said"),
    [('api_key = "k"\ntoken = "x"\n', "unknown settings ['token']"), ("api_key = 3\n", "must be a non-empty string")],
)
def test_a_config_file_with_mistakes_is_named(clean_environment: Path, content: str, said: str) -> None:
    clean_environment.parent.mkdir(parents=True)
    clean_environment.write_text(content)
    with pytest.raises(ClientError, match=re.escape(said)):
        connection(None, None)


def test_a_download_takes_the_servers_file_name_without_its_directories(tmp_path: Path) -> None:
    def named(disposition: str) -> str:
        return attachment_name(httpx.Response(200, headers={"Content-Disposition": disposition}), "fallback.tar.gz")

    assert named('attachment; filename="ftjob-x-adapter.tar.gz"') == "ftjob-x-adapter.tar.gz"
    assert named("attachment; filename*=UTF-8''%D9%85%D8%AF%D9%84.tar.gz") == "مدل.tar.gz"
    assert named('attachment; filename="../../etc/passwd"') == "passwd"
    assert named("") == "fallback.tar.gz"
    assert destination(tmp_path, "a.tar.gz") == tmp_path / "a.tar.gz"
    assert destination(tmp_path / "b.tar.gz", "a.tar.gz") == tmp_path / "b.tar.gz"


def test_an_api_error_line_has_the_servers_message_code_and_param() -> None:
    error = {"message": "No fine-tuning job with id 'x'", "code": "not_found", "param": "fine_tuning_job_id"}
    assert ApiError(404, error).message == "No fine-tuning job with id 'x' (404 not_found, param fine_tuning_job_id)"
    assert ApiError(502, {"message": "Bad Gateway: <html>"}).message == "Bad Gateway: <html> (502)"
