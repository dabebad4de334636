"""One attempt of a webhook delivery (core.webhooks), as a worker makes it: claim the
delivery if it is due, POST its event to the endpoint, record the attempt and what comes
next (delivered, a retry later, or failed).

Signed as the Standard Webhooks specification says (OpenAI's webhooks are): headers
`webhook-id` (the event's id, the same on every attempt: receivers deduplicate by it),
`webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`:
`v1,` and the base64 HMAC-SHA256, keyed with the base64-decoded secret after `whsec_`, of
`{webhook-id}.{webhook-timestamp}.{body}`.

Any answer but 2xx, a timeout or a network error is retried, after 4 times longer each
time; 410 Gone (the receiver says the endpoint is no more) and a URL refused by
core.webhook_urls (FTSVC_WEBHOOK_ALLOWED_NETWORKS no longer allows where it resolves)
fail the delivery at once. Other 4xx are retried: a receiver still on a rotated secret
answers 401 until it is updated."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time
from dataclasses import dataclass

import httpx
from sqlalchemy import or_, select, update

from core import webhook_urls
from core.db import session_scope
from core.models import Webhook, WebhookAttempt, WebhookDelivery
from core.settings import get_settings
from core.transitions import rows_matched
from core.webhooks import PENDING, SECRET_PREFIX, DeliveryStatus

RETRY_FACTOR = 4.0
MAX_RETRY_DELAY_SECONDS = 6 * 3600.0
JITTER = 0.25
# A worker's claim on a delivery covers its attempt: connect, write and read may each
# take the timeout.
CLAIM_TIMEOUTS, CLAIM_SLACK_SECONDS = 4, 30.0
GONE = 410
# Of a refused answer's body, what the attempt's error keeps.
EXCERPT_BYTES = 200
USER_AGENT = "ftsvc-webhooks/1"


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header's value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def retry_delay(failed_attempts: int) -> float:
    """Seconds until the next attempt after this many failed ones."""
    base = get_settings().webhook_retry_base_seconds * RETRY_FACTOR ** (failed_attempts - 1)
    return min(base, MAX_RETRY_DELAY_SECONDS) * random.uniform(1 - JITTER, 1 + JITTER)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int
    # None: retry if attempts remain.
    final: DeliveryStatus | None


@dataclass(frozen=True)
class Claim:
    delivery_id: str
    attempts: int
    event_id: str
    body: str
    url: str
    secret: str


def _claim(delivery_id: str) -> Claim | None:
    """The delivery, now held by this worker, if it is pending, due, and not held by
    another (a duplicate message, or one for a delivery done since, claims nothing).
    A message that came before the delivery is due (this host's clock is behind the
    sender's) is forgotten: the maintenance loop sends another when it is due."""
    moment = time.time()
    hold = CLAIM_TIMEOUTS * get_settings().webhook_timeout_seconds + CLAIM_SLACK_SECONDS
    pending = update(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id,
        WebhookDelivery.status == PENDING,
        or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < moment),
    )
    with session_scope() as session:
        due = pending.where(WebhookDelivery.next_attempt_at <= moment)
        if not rows_matched(session, due.values(claimed_until=moment + hold)):
            session.execute(pending.where(WebhookDelivery.next_attempt_at > moment).values(sent_at=None))
            return None
        delivery = WebhookDelivery
        stmt = (
            select(delivery.attempts, delivery.event_id, delivery.body, Webhook.url, Webhook.secret)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        )
        attempts, event_id, body, url, secret = session.execute(stmt).one()
    return Claim(delivery_id, attempts, event_id, body, url, secret)


def _milliseconds_since(start: float) -> int:
    return round((time.monotonic() - start) * 1000)


def _excerpt(response: httpx.Response) -> str:
    """The start of a response's body, without reading more of it, as one line of
    printable text (Postgres text cannot hold the NUL a binary body may have)."""
    received = b""
    for chunk in response.iter_raw():
        received += chunk
        if len(received) >= EXCERPT_BYTES:
            break
    text = received[:EXCERPT_BYTES].decode(errors="replace")
    return "".join(char if char.isprintable() else " " for char in text).strip()


def attempt(url: str, secret: str, message_id: str, body: str) -> Outcome:
    """POST the body to the URL, signed; no redirect followed, no proxy."""
    start = time.monotonic()
    try:
        target = webhook_urls.check(url)
    except webhook_urls.WebhookUrlRefused as exc:
        unresolvable = exc.code == "webhook_url_unresolvable"  # DNS may answer next time
        return Outcome(None, exc.message, _milliseconds_since(start), None if unresolvable else "failed")
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "host": target.host_header(),
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    timeout = get_settings().webhook_timeout_seconds
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(
                "POST",
                target.request_url(),
                content=body.encode(),
                headers=headers,
                # TLS names (and verifies) the URL's host, not the address connected to.
                extensions={"sni_hostname": target.url.host},
            ) as response,
        ):
            code = response.status_code
            if response.is_success:
                return Outcome(code, None, _milliseconds_since(start), "delivered")
            excerpt = _excerpt(response)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc or 'no detail'}", _milliseconds_since(start), None)
    error = f"HTTP {code}" + (f": {excerpt}" if excerpt else "")
    return Outcome(code, error, _milliseconds_since(start), "failed" if code == GONE else None)


def _record(claim: Claim, attempted_at: float, outcome: Outcome) -> None:
    """The attempt, and the delivery's next state: a retry after `retry_delay` while
    attempts remain. Nothing when the delivery is gone (its webhook was deleted)."""
    number = claim.attempts + 1
    status = outcome.final
    if status is None and number >= get_settings().webhook_max_attempts:
        status = "failed"
    next_attempt_at = time.time() + retry_delay(number) if status is None else None
    with session_scope() as session:
        moved = update(WebhookDelivery).where(
            WebhookDelivery.id == claim.delivery_id, WebhookDelivery.attempts == claim.attempts
        )
        values = {
            "attempts": number,
            "status": status or PENDING,
            "next_attempt_at": next_attempt_at,
            "claimed_until": None,
            "sent_at": None,  # the maintenance loop sends the retry when it is due
        }
        if rows_matched(session, moved.values(**values)):
            session.add(
                WebhookAttempt(
                    delivery_id=claim.delivery_id,
                    number=number,
                    attempted_at=attempted_at,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=outcome.error,
                )
            )


def deliver(delivery_id: str) -> None:
    """One attempt of the delivery, if it is due and no other worker makes it now."""
    claim = _claim(delivery_id)
    if claim is None:
        return
    attempted_at = time.time()
    _record(claim, attempted_at, attempt(claim.url, claim.secret, claim.event_id, claim.body))
