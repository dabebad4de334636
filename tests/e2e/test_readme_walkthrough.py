"""The embedded default, started the way the README's run command starts it (SQLite,
the serverless SQLAlchemy broker, local storage, the tiny model built on first run),
driven by the README's own curl walk-through."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, start_embedded_service, stop_embedded_service

pytestmark = pytest.mark.slow


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    return re.search(r"```bash\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]


def test_readme_walkthrough_on_the_embedded_service(tmp_path: Path) -> None:
    port = free_port()
    server = start_embedded_service(tmp_path / "var", port, tmp_path / "serve.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSVC_")} | {
        "FTSVC_DATA_DIR": str(tmp_path / "var")
    }
    try:
        # The walk-through runs from the repository root: its examples and virtualenv.
        (tmp_path / "examples").symlink_to(ROOT / "examples")
        (tmp_path / ".venv").symlink_to(ROOT / ".venv")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough()],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env
            | {"FT": f"http://127.0.0.1:{port}/v1", "FT_KEY": (tmp_path / "var" / "local-api-key").read_text().strip()},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr + result.stdout + (tmp_path / "serve.log").read_text()[-3000:]
        out = result.stdout
        # The job, its merge, then a second job that trained its fine-tuned model further.
        assert out.count("\nsucceeded\n") == 3
        first = re.search(r"^(ft:tiny-llama:org-local:demo:ftjob-\w+):ckpt-step-30$", out, re.M)
        second = re.search(r"^ft:tiny-llama:org-local:ftjob-\w+$", out, re.M)  # named after the real base
        assert first and second and "\norg-local\n" in out, out
        assert "adapter_model.safetensors" in out and "adapter_config.json" in out and "README.md" in out
        # One folder, named after the fine-tuned model, whose model card shows the results.
        (folder,) = tmp_path.glob("ft-tiny-llama-org-local-demo-ftjob-*")
        assert folder.is_dir() and "### Results" in out
        digest = hashlib.sha256((tmp_path / "adapter.tar.gz").read_bytes()).hexdigest()
        assert f"x-artifact-sha256: {digest}" in out.lower()
        assert (tmp_path / "var" / "ftsvc.db").exists() and (tmp_path / "var" / "broker.db").exists()
        assert (tmp_path / "var" / "models" / "tiny-llama" / "model.safetensors").exists()
        # The merged model: one folder with its weights and tokenizer.
        merged = re.findall(r"^(ft-tiny-llama-org-local-demo-ftjob-[\w-]+)/(\S+)$", out, re.M)
        assert len({folder for folder, _ in merged}) == 1
        assert {"model.safetensors", "config.json", "tokenizer.json"} <= {name for _, name in merged}
        # The chat with the fine-tuned model ends it: a reply from the embedded inference server.
        assert re.search(
            r"^\{'index': 0, 'message': \{'role': 'assistant', 'content': .*'finish_reason': '(stop|length)'", out, re.M
        ), out
    finally:
        stop_embedded_service(server)
    assert server.returncode == 0
