"""The webhook queue's task: one attempt of a delivery (core.webhook_delivery). A failed
task leaves its delivery pending, and the maintenance loop sends it again once its
claim has lapsed."""

from __future__ import annotations

from core.queue import DELIVER_WEBHOOK_TASK, get_celery
from core.webhook_delivery import deliver

app = get_celery()


@app.task(name=DELIVER_WEBHOOK_TASK, acks_late=True)
def deliver_webhook(delivery_id: str) -> None:
    deliver(delivery_id)
