"""Public ids with OpenAI-style prefixes (file-…, ftjob-…, ftevent-…)."""

import secrets
import time


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(18).replace('-', 'a').replace('_', 'b')}"


def now() -> int:
    """Unix seconds, the wire format's `created_at`."""
    return int(time.time())
