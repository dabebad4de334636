"""The lease protocol on the real database: claims, renewals, the reaper and the queue
reconciler, each step driven directly (the fault tests drive them through processes)."""

from __future__ import annotations

import time

import pytest
import redis
from sqlalchemy import select, update

from core import leases, maintenance
from core.db import session_scope
from core.job_creation import create_job
from core.jobs import transition
from core.models import Job, JobAttempt, JobEvent
from core.queue import BROKER_MARKER
from core.settings import get_settings
from core.specs import JobSpec
from core.states import JobStatus
from tests.conftest import BROKER_URL, TEST_ORG
from tests.helpers import unsent_queued_job


@pytest.fixture
def job_id(client_module, chat_file: str):  # type: ignore[no-untyped-def]
    job_id = unsent_queued_job(TEST_ORG, chat_file)
    yield job_id
    with session_scope() as session:
        transition(session, job_id, JobStatus.CANCELLED, message="test over")


def job(job_id: str) -> Job:
    with session_scope() as session:
        return session.scalar(select(Job).where(Job.id == job_id))  # type: ignore[return-value]


def expire_lease(job_id: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))


def last_event(job_id: str) -> JobEvent:
    with session_scope() as session:
        return session.scalar(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.pk.desc()))  # type: ignore[return-value]


def test_one_claim_wins_and_only_the_owner_renews(job_id: str) -> None:
    with session_scope() as session:
        claim = leases.claim(session, job_id, "owner-a", "host")
        assert claim is not None and claim.attempt == 1 and claim.resume_from is None
    with session_scope() as session:
        assert leases.claim(session, job_id, "owner-b", "host") is None  # a duplicate delivery
        leases.note_dropped_delivery(session, job_id)
    assert last_event(job_id).message.startswith("A second delivery of this job's message was dropped")
    with session_scope() as session:
        assert leases.renew(session, job_id, "owner-a") and not leases.renew(session, job_id, "owner-b")
    running = job(job_id)
    assert running.lease_owner == "owner-a" and running.lease_expires_at > time.time() + 3


def test_the_reaper_requeues_an_expired_lease_and_leaves_a_live_one(job_id: str) -> None:
    with session_scope() as session:
        leases.claim(session, job_id, "owner-a", "host")
    with session_scope() as session:
        assert leases.reap(session) == 0  # alive
    expire_lease(job_id)
    with session_scope() as session:
        assert leases.reap(session) == 1
    requeued = job(job_id)
    assert requeued.status == "queued" and requeued.lease_owner is None and requeued.enqueued_at is None
    assert "requeued to resume from the beginning" in last_event(job_id).message
    with session_scope() as session:
        [attempt] = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id))
        assert attempt.outcome == "lease_expired" and attempt.ended_at is not None
        # The presumed-dead worker can no longer renew, record or finish anything.
        assert not leases.renew(session, job_id, "owner-a")
        assert not leases.end_run(session, job_id, "owner-a", 1, "succeeded", JobStatus.SUCCEEDED)
    with session_scope() as session:
        assert leases.claim(session, job_id, "owner-b", "host").attempt == 2  # type: ignore[union-attr]


def test_the_reaper_fails_a_job_after_max_attempts_and_honours_a_pause(job_id: str) -> None:
    for number in range(1, get_settings().max_attempts + 1):
        with session_scope() as session:
            assert leases.claim(session, job_id, f"owner-{number}", "host") is not None
        expire_lease(job_id)
        with session_scope() as session:
            leases.reap(session)
    failed = job(job_id)
    assert failed.status == "failed" and failed.error["code"] == "worker_lost"  # type: ignore[index]
    assert f"ran {get_settings().max_attempts} times" in failed.error["message"]  # type: ignore[index]


def test_attempts_given_back_by_stopping_workers_do_not_count_toward_max_attempts(job_id: str) -> None:
    max_attempts = get_settings().max_attempts
    for number in range(1, max_attempts + 1):
        with session_scope() as session:
            assert leases.is_claimable(session, job_id)
            assert leases.claim(session, job_id, f"stopping-{number}", "host") is not None
            assert not leases.is_claimable(session, job_id)
        with session_scope() as session:
            assert leases.give_back(session, job_id, f"stopping-{number}", number, steps=0)
        given_back = job(job_id)
        assert given_back.status == "queued" and given_back.lease_owner is None and given_back.enqueued_at is None
    for number in range(1, max_attempts):  # lost workers: all but the last run are requeued
        with session_scope() as session:
            assert leases.claim(session, job_id, f"lost-{number}", "host") is not None
        expire_lease(job_id)
        with session_scope() as session:
            leases.reap(session)
        assert job(job_id).status == "queued"
    with session_scope() as session:
        assert leases.claim(session, job_id, "lost-last", "host") is not None
    expire_lease(job_id)
    with session_scope() as session:
        leases.reap(session)
    assert job(job_id).status == "failed"
    assert [a.outcome for a in attempts(job_id)] == ["worker_stopped"] * max_attempts + ["lease_expired"] * max_attempts


def attempts(job_id: str) -> list[JobAttempt]:
    with session_scope() as session:
        return leases.attempts_of(session, job_id)


def test_a_lost_worker_of_a_job_asked_to_pause_leaves_it_paused(job_id: str) -> None:
    with session_scope() as session:
        leases.claim(session, job_id, "owner-a", "host")
        session.execute(update(Job).where(Job.id == job_id).values(pause_requested=True))
    expire_lease(job_id)
    with session_scope() as session:
        leases.reap(session)
    assert job(job_id).status == "paused"


def test_the_reconciler_sends_unsent_jobs_and_all_queued_jobs_after_the_broker_lost_its_data(
    job_id: str,
) -> None:
    broker = redis.Redis.from_url(BROKER_URL)
    broker.set(BROKER_MARKER, "1")
    assert job(job_id).enqueued_at is None
    assert maintenance.reconcile_queue() >= 1
    sent_at = job(job_id).enqueued_at
    assert sent_at is not None
    assert maintenance.reconcile_queue() == 0  # nothing left to send

    broker.delete(BROKER_MARKER)  # what FLUSHALL or a restart without persistence does
    assert maintenance.reconcile_queue() >= 1
    assert job(job_id).enqueued_at > sent_at  # type: ignore[operator]
    assert broker.exists(BROKER_MARKER)


def test_the_reconciler_sends_a_job_waiting_for_its_pre_flight_to_the_pre_flight_queue(
    client_module, chat_file: str
) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:  # created, its message never sent (the broker was down)
        job_id = create_job(session, TEST_ORG, JobSpec(model="tiny-llama", training_file=chat_file)).id
    assert job(job_id).status == "validating_files" and job(job_id).enqueued_at is None
    assert maintenance.reconcile_queue() >= 1
    deadline = time.monotonic() + 120
    while job(job_id).status == "validating_files":  # the pre-flight worker reads the data
        assert time.monotonic() < deadline, "the pre-flight never ran"
        time.sleep(0.2)
    assert job(job_id).status == "queued" and job(job_id).statistics["examples"] == 36  # type: ignore[index]
    with session_scope() as session:
        transition(session, job_id, JobStatus.CANCELLED, message="test over")
