"""Webhooks: an organization's endpoints and the outbox of their deliveries.

A job's terminal transition (core.jobs.transition) records one delivery per endpoint
that wants the event, in the transition's own transaction: the event is never lost to a
crash between the two. Once that transaction commits, each delivery's id is published
to the webhook queue (a pre-flight worker sends it: core.webhook_delivery); the
maintenance loop publishes again those that are due and whose message never arrived or
was lost, and the retries of failed attempts, whose time has come."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import delete, event, func, or_, select, update
from sqlalchemy.orm import Session

from core import webhook_urls
from core.db import session_scope
from core.errors import InvalidRequest, NotFound
from core.ids import new_id, now
from core.models import Job, Webhook, WebhookAttempt, WebhookDelivery
from core.paging import page
from core.queue import DELIVER_WEBHOOK_TASK, send
from core.specs import no_nul
from core.states import JobStatus
from core.transitions import rows_matched

EventType = Literal["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
EVENT_OF: dict[JobStatus, EventType] = {
    JobStatus.SUCCEEDED: "fine_tuning.job.succeeded",
    JobStatus.FAILED: "fine_tuning.job.failed",
    JobStatus.CANCELLED: "fine_tuning.job.cancelled",
}
DeliveryStatus = Literal["pending", "delivered", "failed"]
PENDING: DeliveryStatus = "pending"
# Each terminal job costs one delivery per endpoint.
MAX_WEBHOOKS_PER_ORG = 10
# A due delivery whose message was sent this long ago and that no worker has taken is
# presumed lost with its message (a broker restart, a worker killed before it acked):
# it is sent again. Duplicates are harmless: a worker attempts only a due, unclaimed delivery.
RESEND_AFTER_SECONDS = 300.0
SECRET_PREFIX = "whsec_"
# The session's info key under which deliveries wait for their transaction's commit.
_UNSENT = "ftsvc.webhook_deliveries"


class WebhookRequest(BaseModel):
    """The body of `POST /v1/organization/webhooks`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        max_length=2048,
        description="Where events are POSTed: an https URL whose host resolves to public addresses only",
    )
    description: Annotated[str, StringConstraints(max_length=512), AfterValidator(no_nul)] | None = None
    events: list[EventType] = Field(
        default=list(EVENT_TYPES), min_length=1, description="The event types it receives; default: all"
    )


def new_secret() -> str:
    """A Standard Webhooks secret: the prefix and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _no_such_webhook(webhook_id: str) -> NotFound:
    return NotFound(f"No webhook with id {webhook_id!r}", param="webhook_id")


def create_webhook(session: Session, org_id: str, request: WebhookRequest) -> Webhook:
    """Register an endpoint, its URL checked (core.webhook_urls), with a new secret."""
    webhook_urls.check(request.url)
    count = session.scalar(select(func.count()).select_from(Webhook).where(Webhook.organization_id == org_id))
    if (count or 0) >= MAX_WEBHOOKS_PER_ORG:
        raise InvalidRequest(
            f"The organization has {MAX_WEBHOOKS_PER_ORG} webhooks, the most it may have: delete one first",
            code="webhook_limit_reached",
        )
    webhook = Webhook(
        id=new_id("wh"),
        organization_id=org_id,
        url=request.url,
        description=request.description,
        events=sorted(set(request.events)),
        secret=new_secret(),
    )
    session.add(webhook)
    session.flush()
    return webhook


def get_webhook(session: Session, org_id: str, webhook_id: str) -> Webhook:
    webhook = session.scalar(select(Webhook).where(Webhook.id == webhook_id, Webhook.organization_id == org_id))
    if webhook is None:
        raise _no_such_webhook(webhook_id)
    return webhook


def list_webhooks(session: Session, org_id: str, after: str | None, limit: int) -> tuple[list[Webhook], bool]:
    return page(session, select(Webhook).where(Webhook.organization_id == org_id), Webhook, after, limit)


def delete_webhook(session: Session, org_id: str, webhook_id: str) -> None:
    """The endpoint and its deliveries (an attempt in flight is not recorded)."""
    if not rows_matched(session, delete(Webhook).where(Webhook.id == webhook_id, Webhook.organization_id == org_id)):
        raise _no_such_webhook(webhook_id)


def rotate_secret(session: Session, org_id: str, webhook_id: str) -> Webhook:
    """A new secret at once: every later attempt, retries included, is signed with it."""
    webhook = get_webhook(session, org_id, webhook_id)
    webhook.secret = new_secret()
    session.flush()
    return webhook


def list_deliveries(
    session: Session, org_id: str, webhook_id: str, after: str | None, limit: int
) -> tuple[list[WebhookDelivery], bool]:
    """The endpoint's deliveries, newest first."""
    get_webhook(session, org_id, webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    return page(session, stmt, WebhookDelivery, after, limit)


def attempts_of(session: Session, delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    """The attempts of these deliveries, in order, by delivery id (one query)."""
    attempts: dict[str, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in delivery_ids}
    if delivery_ids:
        stmt = (
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.delivery_id, WebhookAttempt.number)
        )
        for attempt in session.scalars(stmt):
            attempts[attempt.delivery_id].append(attempt)
    return attempts


def get_delivery(session: Session, org_id: str, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    get_webhook(session, org_id, webhook_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == webhook_id)
    delivery = session.scalar(stmt)
    if delivery is None:
        raise NotFound(f"No delivery with id {delivery_id!r} for webhook {webhook_id}", param="delivery_id")
    return delivery


def _add_delivery(
    session: Session, webhook_id: str, event_id: str, event_type: str, job_id: str, body: str
) -> WebhookDelivery:
    """A pending delivery, due now, published once its transaction commits."""
    delivery = WebhookDelivery(
        id=new_id("whdel"),
        webhook_id=webhook_id,
        event_id=event_id,
        event_type=event_type,
        job_id=job_id,
        body=body,
        status=PENDING,
        attempts=0,
        next_attempt_at=time.time(),
    )
    session.add(delivery)
    session.info.setdefault(_UNSENT, []).append(delivery.id)
    return delivery


def redeliver(session: Session, org_id: str, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """The same event (same id and body: a receiver that processed it may tell) in a new
    delivery with attempts of its own."""
    old = get_delivery(session, org_id, webhook_id, delivery_id)
    delivery = _add_delivery(session, webhook_id, old.event_id, old.event_type, old.job_id, old.body)
    session.flush()
    return delivery


def record_job_event(session: Session, job_id: str, status: JobStatus) -> None:
    """The job reached `status`: a delivery of its event to each of its organization's
    endpoints that wants it, in the caller's transaction."""
    event_type = EVENT_OF.get(status)
    if event_type is None:
        return
    org_id = session.scalar(select(Job.organization_id).where(Job.id == job_id))
    endpoints = session.execute(
        select(Webhook.id, Webhook.events).where(Webhook.organization_id == org_id).order_by(Webhook.pk)
    )
    wanted = [webhook_id for webhook_id, events in endpoints if event_type in events]
    if not wanted:
        return
    event_id = new_id("evt")
    body = json.dumps(
        {"object": "event", "id": event_id, "type": event_type, "created_at": now(), "data": {"id": job_id}},
        separators=(",", ":"),
    )
    for webhook_id in wanted:
        _add_delivery(session, webhook_id, event_id, event_type, job_id, body)


def _publish_committed(session: Session) -> None:
    """After a commit: publish the deliveries it recorded, from a thread of its own (the
    API commits a request's session on its event loop, which a slow broker must not
    hold; not a daemon, so a process that exits sends them first). A message that
    cannot be sent (broker down) is sent again by the maintenance loop."""
    if delivery_ids := session.info.pop(_UNSENT, []):
        threading.Thread(target=_publish, args=(delivery_ids,), name="ftsvc-webhook-publish").start()


def _publish(delivery_ids: list[str]) -> None:
    for delivery_id in delivery_ids:
        send(DELIVER_WEBHOOK_TASK, delivery_id)


def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_UNSENT, None)


event.listen(Session, "after_commit", _publish_committed)
event.listen(Session, "after_rollback", _forget_rolled_back)


def resend_due() -> int:
    """Publish the pending deliveries that are due, that no worker holds, and whose
    message was not sent by this loop yet or was sent long ago (lost); returns how many.
    Commits: each is marked as sent once its message reached the broker."""
    moment = time.time()
    with session_scope() as session:
        due = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.next_attempt_at <= moment,
                    or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < moment),
                    or_(WebhookDelivery.sent_at.is_(None), WebhookDelivery.sent_at < moment - RESEND_AFTER_SECONDS),
                )
                .order_by(WebhookDelivery.pk)
                .limit(1000)
            )
        )
    sent = 0
    for delivery_id in due:
        if send(DELIVER_WEBHOOK_TASK, delivery_id):
            with session_scope() as session:
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(sent_at=moment))
            sent += 1
    return sent
