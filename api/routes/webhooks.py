"""Webhooks: an organization's endpoints for its jobs' terminal events (core.webhooks),
their deliveries with every attempt, and a redelivery."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Limit, OrgDep, ReadSessionDep, SessionDep
from api.openapi import ModelRoute
from api.schemas import DeletedWebhook, ListPage, WebhookDeliveryObject, WebhookObject, WebhookWithSecret
from core import webhooks
from core.webhooks import WebhookRequest

router = APIRouter(prefix="/v1/organization/webhooks", tags=["webhooks"], route_class=ModelRoute)


@router.post("")
def create_webhook(request: WebhookRequest, session: SessionDep, org: OrgDep) -> WebhookWithSecret:
    """Register an endpoint: its URL must be https and resolve to public addresses only.
    The answer carries the signing secret, shown this once."""
    return WebhookWithSecret.from_row(webhooks.create_webhook(session, org, request))


@router.get("")
def list_webhooks(
    session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[WebhookObject]:
    """The organization's endpoints, newest first."""
    rows, has_more = webhooks.list_webhooks(session, org, after, limit)
    return ListPage[WebhookObject].of([WebhookObject.from_row(w) for w in rows], has_more)


@router.get("/{webhook_id}")
def get_webhook(webhook_id: str, session: ReadSessionDep, org: OrgDep) -> WebhookObject:
    return WebhookObject.from_row(webhooks.get_webhook(session, org, webhook_id))


@router.delete("/{webhook_id}")
def delete_webhook(webhook_id: str, session: SessionDep, org: OrgDep) -> DeletedWebhook:
    """The endpoint and its deliveries: nothing more is sent to it."""
    webhooks.delete_webhook(session, org, webhook_id)
    return DeletedWebhook(id=webhook_id)


@router.post("/{webhook_id}/rotate_secret")
def rotate_secret(webhook_id: str, session: SessionDep, org: OrgDep) -> WebhookWithSecret:
    """A new signing secret, shown this once; every later attempt is signed with it."""
    return WebhookWithSecret.from_row(webhooks.rotate_secret(session, org, webhook_id))


@router.get("/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str, session: ReadSessionDep, org: OrgDep, after: str | None = None, limit: Limit = 20
) -> ListPage[WebhookDeliveryObject]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    rows, has_more = webhooks.list_deliveries(session, org, webhook_id, after, limit)
    attempts = webhooks.attempts_of(session, [d.id for d in rows])
    data = [WebhookDeliveryObject.from_row(d, attempts[d.id]) for d in rows]
    return ListPage[WebhookDeliveryObject].of(data, has_more)


@router.get("/{webhook_id}/deliveries/{delivery_id}")
def get_delivery(webhook_id: str, delivery_id: str, session: ReadSessionDep, org: OrgDep) -> WebhookDeliveryObject:
    delivery = webhooks.get_delivery(session, org, webhook_id, delivery_id)
    return WebhookDeliveryObject.from_row(delivery, webhooks.attempts_of(session, [delivery.id])[delivery.id])


@router.post("/{webhook_id}/deliveries/{delivery_id}/redeliver")
def redeliver(webhook_id: str, delivery_id: str, session: SessionDep, org: OrgDep) -> WebhookDeliveryObject:
    """Send the delivery's event again (same event id and body) as a new delivery with
    attempts of its own; sent once this request has committed."""
    return WebhookDeliveryObject.from_row(webhooks.redeliver(session, org, webhook_id, delivery_id), [])
