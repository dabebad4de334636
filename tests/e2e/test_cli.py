"""The client commands (`ftsvc files|jobs|download`), run as the real command against a
real embedded service started for this module: uploads, jobs created, watched (in a
terminal and through a pipe), paused, resumed and cancelled, adapters downloaded and
checked, and every way they fail in one line with its exit code."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.filesize import decimal

from tests.helpers import EXAMPLES, ROOT, free_port, start_embedded_service, stop_embedded_service

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


@dataclass(frozen=True)
class Service:
    data_dir: Path
    base_url: str
    key: str
    home: Path  # the client's HOME and XDG_CONFIG_HOME: no config file of the machine's

    def env(self, **settings: str) -> dict[str, str]:
        """A shell with none of the test suite's FTSVC_ settings, pointed at the service."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTSVC_")}
        return (
            env
            | {
                "PYTHONPATH": str(ROOT),
                "HOME": str(self.home),
                "XDG_CONFIG_HOME": str(self.home / ".config"),
                "FTSVC_BASE_URL": self.base_url,
                "FTSVC_API_KEY": self.key,
            }
            | settings
        )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("cli")
    port = free_port()
    server = start_embedded_service(root / "var", port, root / "serve.log")
    (root / "home").mkdir()
    key = (root / "var" / "local-api-key").read_text().strip()
    try:
        yield Service(root / "var", f"http://127.0.0.1:{port}/v1", key, root / "home")
    finally:
        stop_embedded_service(server)


def ftsvc(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftsvc.cli", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftsvc: error: "), result.stderr
    return lines[0]


def in_terminal(args: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """The command run in a pseudo-terminal of 120 × 40 (what a person sees), and all it
    wrote there, escape sequences removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    environment = {k: v for k, v in env.items() if k != "COLUMNS"} | {"TERM": "xterm-256color"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ftsvc.cli", *args], cwd=ROOT, env=environment, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    written, deadline = b"", time.monotonic() + timeout
    try:
        while True:
            assert time.monotonic() < deadline, ANSI.sub("", written.decode(errors="replace"))[-3000:]
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the command exited and its terminal closed
                    break
                if not chunk:
                    break
                written += chunk
    finally:
        os.close(master)
        process.wait(timeout=30)
    return process.returncode, ANSI.sub("", written.decode(errors="replace"))


def wait_for_status(service: Service, job_id: str, statuses: set[str], timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = json.loads(ok(ftsvc("jobs", "show", job_id, "--json", env=service.env())))
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job['status']}"
        time.sleep(0.5)


# -- files ------------------------------------------------------------------------------


def test_upload_list_and_show_a_file(service: Service) -> None:
    out = ok(ftsvc("files", "upload", str(EXAMPLES / "chat.jsonl"), env=service.env()))
    file_id = out.split()[0]
    assert file_id.startswith("file-") and "processed: chat (jsonl), 36 examples" in out
    assert ok(ftsvc("files", "upload", str(EXAMPLES / "chat.jsonl"), "-q", env=service.env())).startswith("file-")
    listed = ok(ftsvc("files", "list", env=service.env())).splitlines()
    assert listed[0].split() == ["id", "filename", "status", "format", "examples", "size", "created"]
    row = next(line for line in listed if line.startswith(file_id)).split()
    assert row[1:5] == ["chat.jsonl", "processed", "chat", "36"]
    shown = json.loads(ok(ftsvc("files", "show", file_id, "--json", env=service.env())))
    assert shown["id"] == file_id and shown["examples"] == 36


def test_an_invalid_file_shows_its_problems_as_a_table_with_line_numbers(service: Service, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad.write_text(f"{json.dumps(good)}\nnot json\n{json.dumps({'messages': []})}\n")
    result = ftsvc("files", "upload", str(bad), env=service.env())
    line = error_line(result, 1)
    assert "bad.jsonl is not a valid training file" in line and "(400 invalid_file, param file)" in line
    header, *problems = result.stdout.splitlines()
    assert header.split() == ["line", "example", "field", "problem"]
    assert [p.split()[:2] for p in problems] == [["2", "2"], ["3", "3"]], result.stdout
    assert "invalid JSON" in problems[0] and "messages" in problems[1]
    kept = re.search(r"kept as (file-\w+)", line)
    assert kept is not None
    shown = ok(ftsvc("files", "show", kept.group(1), env=service.env())).splitlines()
    assert shown[0].startswith(f"{kept.group(1)}  bad.jsonl  error: ") and shown[2:] == problems


# -- errors -----------------------------------------------------------------------------


def test_a_wrong_key_says_where_the_key_came_from(service: Service) -> None:
    line = error_line(ftsvc("files", "list", env=service.env(FTSVC_API_KEY="ftsk-wrong")), 1)
    assert line == ("ftsvc: error: Invalid or revoked API key (401 invalid_api_key); the key came from FTSVC_API_KEY")
    line = error_line(ftsvc("jobs", "list", "--api-key", "ftsk-wrong", env=service.env()), 1)
    assert line.endswith("the key came from --api-key")


@pytest.mark.parametrize(
    "command",
    [["jobs", "show"], ["jobs", "watch"], ["jobs", "cancel"], ["download"], ["jobs", "checkpoints"]],
    ids=lambda c: " ".join(c),
)
def test_an_unknown_job_is_named(service: Service, command: list[str]) -> None:
    line = error_line(ftsvc(*command, "ftjob-nonexistent", env=service.env()), 1)
    assert line == (
        "ftsvc: error: No fine-tuning job with id 'ftjob-nonexistent' (404 not_found, param fine_tuning_job_id)"
    )


def test_a_server_that_is_not_there(service: Service) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    line = error_line(ftsvc("jobs", "list", "--base-url", url, env=service.env()), 3)
    assert f"cannot reach the server at {url}" in line and "Connection refused" in line


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["jobs", "create", "--n-epochs", "many"], "Invalid value for '--n-epochs'"),
        (["jobs", "frobnicate"], "No such command 'frobnicate' (see 'ftsvc jobs --help')"),
        (["jobs", "show"], "Missing argument 'JOB_ID' (see 'ftsvc jobs show --help')"),
        (["files", "upload", "/nonexistent.jsonl"], "does not exist"),
        (["jobs", "create", "--metadata", "team"], "'team' is not KEY=VALUE"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(service: Service, args: list[str], said: str) -> None:
    assert said in error_line(ftsvc(*args, env=service.env()), 2)


def test_the_server_refusing_a_job_names_the_field(service: Service) -> None:
    file_id = ok(ftsvc("files", "upload", str(EXAMPLES / "chat.jsonl"), "-q", env=service.env())).strip()
    line = error_line(
        ftsvc("jobs", "create", "-m", "tiny-llama", "-t", file_id, "--n-epochs", "100", env=service.env()), 1
    )
    assert "method.supervised.hyperparameters.n_epochs: must be at most 50" in line
    assert "(400 invalid_request, param method.supervised.hyperparameters.n_epochs)" in line


def test_the_key_from_a_config_file_or_the_embedded_services_key_file(service: Service, tmp_path: Path) -> None:
    config = service.home / ".config" / "ftsvc" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'base_url = "{service.base_url}"\napi_key = "{service.key}"\n')
    env = {k: v for k, v in service.env().items() if k not in ("FTSVC_BASE_URL", "FTSVC_API_KEY")}
    try:
        assert ok(ftsvc("jobs", "list", env=env)).startswith("id")
    finally:
        config.unlink()
    # No key anywhere: a server on this machine gets the embedded service's key file.
    assert ok(
        ftsvc("files", "list", env=env | {"FTSVC_BASE_URL": service.base_url, "FTSVC_DATA_DIR": str(service.data_dir)})
    )
    line = error_line(ftsvc("files", "list", env=env | {"FTSVC_BASE_URL": service.base_url}, cwd=tmp_path), 1)
    assert f"no API key for {service.base_url}" in line


# -- jobs -------------------------------------------------------------------------------


def test_a_job_that_fails_exits_4_ctrl_c_130_and_a_cancelled_one_5(service: Service, tmp_path: Path) -> None:
    # Long prompts and a max_seq_length (from a YAML spec) that leaves no answer token:
    # the pre-flight fails the job.
    data = tmp_path / "long.jsonl"
    prompt = "Please read this long question carefully before answering it. " * 4
    rows = [{"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "Yes."}]}] * 3
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    spec = tmp_path / "short.yaml"
    spec.write_text("model: tiny-llama\nqlora:\n  training:\n    max_seq_length: 16\n")
    created = ftsvc("jobs", "create", "--spec", str(spec), "-t", str(data), "-q", env=service.env())
    job_id = ok(created).strip()
    assert created.stderr.startswith("uploaded ") and job_id.startswith("ftjob-")
    watched = ftsvc("jobs", "watch", job_id, env=service.env())
    line = error_line(watched, 4)
    assert f"job {job_id} failed: None of the 3 examples" in line and "(no_trainable_tokens)" in line
    assert "Pre-flight failed (no_trainable_tokens)" in watched.stdout  # the event, as a line of the log
    file_id = created.stderr.split(" as ")[1].split()[0]
    created_and_watched = ftsvc("jobs", "create", "--spec", str(spec), "-t", file_id, "--watch", env=service.env())
    assert "(no_trainable_tokens)" in error_line(created_and_watched, 4)

    # Ctrl-C stops the watching, not the job; cancelling it ends the next watch with 5.
    job_id = ok(ftsvc("jobs", "create", "-m", "tiny-llama", "-t", str(data), "-q", env=service.env())).strip()
    watching = subprocess.Popen(
        [sys.executable, "-m", "ftsvc.cli", "jobs", "watch", job_id],
        cwd=ROOT,
        env=service.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stdout is not None and "Created fine-tuning job" in watching.stdout.readline()
        watching.send_signal(signal.SIGINT)
        _, stderr = watching.communicate(timeout=30)
    finally:
        watching.kill()
    assert watching.returncode == 130 and stderr == "ftsvc: error: interrupted\n", stderr
    assert ok(ftsvc("jobs", "cancel", job_id, env=service.env())) == f"{job_id}: cancelled\n"
    assert error_line(ftsvc("jobs", "watch", job_id, env=service.env()), 5) == (
        f"ftsvc: error: job {job_id} was cancelled"
    )
    line = error_line(ftsvc("jobs", "resume", job_id, env=service.env()), 1)
    assert "(409 " in line and job_id in line


@pytest.mark.slow
def test_train_pause_resume_watch_and_download(service: Service, tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"qlora": {"training": {"learning_rate": 0.01, "checkpoint_steps": 3}}}))
    created = ftsvc(
        "jobs", "create", "--spec", str(spec), "-m", "tiny-llama", "-t", str(EXAMPLES / "chat.jsonl"),
        "--validation-file", str(EXAMPLES / "chat_validation.jsonl"), "--max-steps", "6", "--suffix", "cli",
        "--metadata", "team=cli", env=service.env(),
    )  # fmt: skip
    job_id = ok(created).split()[0]
    assert f"follow it: ftsvc jobs watch {job_id}" in created.stdout
    listed = ok(ftsvc("jobs", "list", "--limit", "1", env=service.env()))
    assert job_id in listed

    # Pause it once it is queued or running, then resume: it continues to the end.
    wait_for_status(service, job_id, {"queued", "running"})
    paused = ok(ftsvc("jobs", "pause", job_id, env=service.env()))
    assert paused in (f"{job_id}: paused\n", f"{job_id}: running (it pauses after its current step)\n"), paused
    wait_for_status(service, job_id, {"paused"})
    assert ok(ftsvc("jobs", "resume", job_id, env=service.env())) == f"{job_id}: queued\n"

    # What a person sees in a terminal: the live view, redrawn until the job succeeds.
    code, screen = in_terminal(["jobs", "watch", job_id], service.env(), timeout=400)
    assert code == 0, screen[-3000:]
    assert "fine-tuning job" in screen and "events" in screen
    assert "6/6 steps  100%" in screen and "━━━━" in screen
    assert re.search(r"loss\s+train [\d.]+ \(step 6\)\s+validation [\d.]+ \(step 6\)", screen), screen[-3000:]
    assert re.search(r"speed\s+[\d,]+ tokens/s", screen)
    assert f"{job_id} succeeded in" in screen and f"ft:tiny-llama:org-local:cli:{job_id}" in screen

    # Through a pipe: one line per event, the facts once, the final line; exit 0.
    piped = ok(ftsvc("jobs", "watch", job_id, env=service.env()))
    assert "Job paused by the user" in piped or "Pause requested" in piped
    assert re.search(r"\d\d:\d\d:\d\d  Step 6: ", piped) and "Job succeeded" in piped
    assert piped.splitlines()[-1].startswith(f"{job_id} succeeded in ")
    shown = ok(ftsvc("jobs", "show", job_id, env=service.env()))
    assert re.search(r"status\s+succeeded", shown) and re.search(r"progress\s+6/6 steps", shown)

    # The adapter, checked against the server's sha256.
    out = ok(ftsvc("download", job_id, env=service.env(), cwd=tmp_path))
    saved = tmp_path / f"{job_id}-adapter.tar.gz"
    digest = hashlib.sha256(saved.read_bytes()).hexdigest()
    assert out == f"saved {saved.name} ({decimal(saved.stat().st_size)}), sha256 {digest} verified\n"
    url = f"{service.base_url}/fine_tuning/jobs/{job_id}/artifacts/adapter"
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {service.key}"}) as response:
        assert response.headers["x-artifact-sha256"] == digest
    again = ftsvc("download", job_id, env=service.env(), cwd=tmp_path)
    assert "already exists; pass --force" in error_line(again, 1)

    # A checkpoint's adapter, by the id `jobs checkpoints` lists.
    checkpoints = json.loads(ok(ftsvc("jobs", "checkpoints", job_id, "--json", env=service.env())))["data"]
    assert checkpoints and "step" in ok(ftsvc("jobs", "checkpoints", job_id, env=service.env()))
    out = ok(ftsvc("download", job_id, "--checkpoint", checkpoints[0]["id"], "-o", str(tmp_path), env=service.env()))
    assert f"sha256 {checkpoints[0]['adapter_sha256']} verified" in out

    # Bytes damaged in storage: the download is refused and nothing is left behind.
    (stored,) = (service.data_dir / "storage" / "artifacts" / job_id).rglob("adapter.tar.gz")
    damaged = bytearray(stored.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    stored.write_bytes(bytes(damaged))
    target = tmp_path / "damaged.tar.gz"
    line = error_line(ftsvc("download", job_id, "-o", str(target), env=service.env()), 1)
    assert f"does not match its sha256: X-Artifact-SHA256 says {digest}" in line and "nothing was saved" in line
    assert not target.exists() and not list(tmp_path.glob("*.part"))


# -- chat -------------------------------------------------------------------------------


def test_chat_one_message_a_conversation_and_an_unknown_model(service: Service) -> None:
    # One message: the reply as the API gives it (greedy: the same tokens), streamed.
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 5}
    answer = httpx.post(
        f"{service.base_url}/chat/completions",
        json=body | {"temperature": 0},
        headers={"Authorization": f"Bearer {service.key}"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    expected = answer.json()["choices"][0]["message"]["content"]
    options = ["--max-tokens", "5", "--temperature", "0"]
    said = ok(ftsvc("chat", "tiny-llama", "-m", "Hello!", *options, env=service.env()))
    assert said == expected + "\n"

    # A conversation: each line a message, each reply printed after a prompt; an empty line ends it.
    talked = subprocess.run(
        [sys.executable, "-m", "ftsvc.cli", "chat", "tiny-llama", *options],
        cwd=ROOT,
        env=service.env(),
        input="Hello!\nAnd then?\n\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert talked.returncode == 0, talked.stderr
    assert talked.stdout.startswith(f"> {expected}\n> ") and talked.stdout.endswith("\n> ")

    unknown = error_line(ftsvc("chat", "no-such-model", "-m", "Hi", env=service.env()), 1)
    assert "no-such-model" in unknown and "404" in unknown
