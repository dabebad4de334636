"""core.logs: the ids on each line in both formats, ids bound per thread (a Celery
worker's task threads), and prints turned into log lines."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from core import logs
from core.settings import get_settings


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], list[str]]]:
    """The lines `logs.configure`'s handler writes on stderr; the root logger restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield lambda: capsys.readouterr().err.splitlines()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_carry_the_process_id_and_the_bound_one(
    captured: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "log_format", "json")
    logs.configure(job_id="ftjob-process")
    log = logging.getLogger("ftsvc.test")
    log.info("one")
    with logs.bound(merge_id="merge-1"):
        log.warning("two %s", "args")
    log.info("three", extra={"job_id": "ftjob-explicit"})
    one, two, three = (json.loads(line) for line in captured())
    assert one.keys() == {"time", "logger", "level", "message", "job_id"}
    assert (one["logger"], one["level"], one["message"], one["job_id"]) == (
        "ftsvc.test",
        "INFO",
        "one",
        "ftjob-process",
    )
    assert (two["message"], two["merge_id"], two["job_id"]) == ("two args", "merge-1", "ftjob-process")
    assert "merge_id" not in three and three["job_id"] == "ftjob-explicit"  # the record's own wins


def test_text_lines_name_the_ids_and_threads_keep_their_own(captured: Callable[[], list[str]]) -> None:
    assert get_settings().log_format == "text"
    logs.configure()
    log = logging.getLogger("ftsvc.test")
    ready = threading.Barrier(2)

    def task(job_id: str) -> None:
        with logs.bound(job_id=job_id):
            ready.wait()  # both bound at once
            log.info("working")

    threads = [threading.Thread(target=task, args=(job,)) for job in ("ftjob-a", "ftjob-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.info("idle")
    lines = captured()
    assert sorted(line.split(" ftsvc.test INFO ")[1] for line in lines[:2]) == [
        "working [job_id=ftjob-a]",
        "working [job_id=ftjob-b]",
    ]
    assert lines[2].endswith(" ftsvc.test INFO idle")


def test_prints_become_log_lines_and_progress_bars_their_last_state(captured: Callable[[], list[str]]) -> None:
    logs.configure(job_id="ftjob-x")
    stream = logs.LineLogger(logging.getLogger("ftsvc.stdout"), logging.INFO)
    print("{'loss': 1.5}", file=stream)
    stream.write("10%|#   |\r100%|####|")
    stream.write(" done\n\n")
    messages = [line.split(" ftsvc.stdout INFO ")[1] for line in captured()]
    assert messages == ["{'loss': 1.5} [job_id=ftjob-x]", "100%|####| done [job_id=ftjob-x]"]
