"""A merge's run on the record, without a worker: its lease (a lost worker's merge runs
again, then fails; only the lease holder publishes), the reconciler sending a merge whose
message was never sent, and a registered model's extraction into a host's model cache."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update

from core import maintenance, merge_runs
from core.db import session_scope
from core.errors import InvalidRequest
from core.model_cache import materialize
from core.models import Merge
from core.registry import ModelRef
from core.settings import get_settings
from core.storage import StoredObject, get_storage
from core.tokenization import prepare_tokenizer
from tests.conftest import TEST_ORG
from tests.helpers import succeeded_job, unsent_merge
from worker.archives import archive


@pytest.fixture
def merge_id(chat_file: str) -> str:
    return unsent_merge(TEST_ORG, succeeded_job(TEST_ORG, chat_file))


def merge_row(merge_id: str) -> Merge:
    with session_scope() as session:
        return session.scalars(select(Merge).where(Merge.id == merge_id)).one()


def claim(merge_id: str, owner: str) -> Merge | None:
    with session_scope() as session:
        return merge_runs.claim(session, merge_id, owner, "host")


def expire_lease(merge_id: str) -> int:
    with session_scope() as session:
        session.execute(update(Merge).where(Merge.id == merge_id).values(lease_expires_at=time.time() - 1))
        return merge_runs.reap(session)


def test_a_lost_workers_merge_runs_again_then_fails(merge_id: str) -> None:
    attempts = get_settings().max_attempts
    for attempt in range(1, attempts + 1):
        claimed = claim(merge_id, f"worker-{attempt}")
        assert claimed is not None and (claimed.status, claimed.attempt) == ("running", attempt)
        assert claim(merge_id, "another") is None  # one run at a time
        assert expire_lease(merge_id) == 1
        row = merge_row(merge_id)
        assert row.lease_owner is None
        assert row.status == ("queued" if attempt < attempts else "failed")
        assert row.enqueued_at is None or row.status == "failed"  # the reconciler sends it again
    assert merge_row(merge_id).error == {
        "code": "worker_lost",
        "message": f"Worker lease worker-{attempts} expired (attempt {attempts}); the merge ran {attempts} times, "
        "the limit (max_attempts), and is not retried",
        "param": None,
    }


def test_only_the_lease_holder_publishes(merge_id: str) -> None:
    stored = StoredObject("merges/x/merged.tar", 1, "0" * 64)
    claim(merge_id, "presumed-dead")
    expire_lease(merge_id)
    claim(merge_id, "replacement")
    with session_scope() as session:
        assert not merge_runs.succeed(session, merge_id, "presumed-dead", "merged.tar", stored, "done")
        assert not merge_runs.give_back(session, merge_id, "presumed-dead")
        assert merge_runs.renew(session, merge_id, "replacement")
        assert merge_runs.succeed(session, merge_id, "replacement", "merged.tar", stored, "done")
    row = merge_row(merge_id)
    assert (row.status, row.storage_key, row.lease_owner, row.attempt) == ("succeeded", stored.key, None, 2)
    with session_scope() as session:  # over: nothing moves it any more
        assert not merge_runs.renew(session, merge_id, "replacement")
        assert claim(merge_id, "late") is None


def test_a_stopping_worker_gives_its_merge_back_and_a_cancelled_one_is_not_renewed(
    merge_id: str, client_module
) -> None:  # type: ignore[no-untyped-def]
    claim(merge_id, "stopping")
    with session_scope() as session:
        assert merge_runs.give_back(session, merge_id, "stopping")
    assert (merge_row(merge_id).status, merge_row(merge_id).lease_owner) == ("queued", None)
    claim(merge_id, "running")
    assert client_module.post(f"/v1/merges/{merge_id}/cancel").json()["status"] == "cancelled"
    with session_scope() as session:
        assert not merge_runs.renew(session, merge_id, "running")  # its worker stops at its next phase


def test_the_reconciler_sends_a_merge_whose_message_was_never_sent(merge_id: str, client_module) -> None:  # type: ignore[no-untyped-def]
    assert merge_row(merge_id).enqueued_at is None
    assert maintenance.reconcile_queue() >= 1
    assert merge_row(merge_id).enqueued_at is not None
    client_module.post(f"/v1/merges/{merge_id}/cancel")  # the worker of a later test drops its message


def test_a_registered_model_is_extracted_whole_or_without_its_weights(tiny_model: Path, tmp_path: Path) -> None:
    stored = archive(get_storage(), "tests/registered.tar", tiny_model.iterdir(), compress=False, folder="mine")
    model = ModelRef("mine", str(tmp_path / "ftmerge-x"), True, 1, archive_key=stored.key, owned_by=TEST_ORG)
    light = materialize(model, weights=False)
    assert light.source == f"{model.source}.tokenizer"
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in Path(light.source).iterdir()}
    assert not list(Path(light.source).glob("*.safetensors"))
    assert prepare_tokenizer(model).template_source == "model"  # what a pre-flight worker reads

    assert materialize(model) == model and (Path(model.source) / "model.safetensors").is_file()
    assert materialize(model, weights=False) == model  # the whole model serves the tokenizer too
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind

    gone = replace(model, source=str(tmp_path / "ftmerge-gone"), archive_key="tests/missing.tar")
    with pytest.raises(InvalidRequest, match="has no stored weights any more") as refused:
        materialize(gone)
    assert refused.value.code == "model_not_found"
