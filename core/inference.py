"""Generation with a base model or one of an organization's fine-tuned models (the
public `/v1/chat/completions` and `/v1/completions`): what an inference server loads
(`Target`, resolved from a model's name by core.inference_targets) and the request the
API sends one (`GenerateRequest`, worker.inference.server). Pydantic only: no torch, no
database.

The internal protocol of an inference server (`ftsvc inference`):
- `POST /internal/generate` with a `GenerateRequest`: once the request's batch starts,
  200 and `application/x-ndjson`, one `GenerateEvent` a line: `start` (the prompt's
  token count), `delta`s (text), then `end` (finish reason and usage) or `error`.
  Before that, an error answer with the service's error body: 400 (a prompt longer
  than the context, max_tokens over it, what the template cannot render), 404 (the
  adapter's files are gone), 429 (its queue is full), 503 (no turn within
  `inference_queue_timeout_seconds`). Closing the connection stops the generation.
- `GET /internal/status`: `ServerStatus` (device, loaded models, counters).
- `GET /healthz`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.registry import ModelRef
from core.specs import Quantization


class BaseTarget(BaseModel):
    """A base model as core.registry names it (a registered one: with its archive)."""

    name: str
    source: str
    archive_key: str | None = None
    created_at: int = 0

    @classmethod
    def of(cls, ref: ModelRef) -> BaseTarget:
        return cls(name=ref.name, source=ref.source, archive_key=ref.archive_key, created_at=ref.created_at)

    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.source, True, self.created_at, archive_key=self.archive_key)


class AdapterTarget(BaseModel):
    name: str  # the fine-tuned model's (or checkpoint's) name
    key: str  # its adapter archive in artifact storage


class Target(BaseModel):
    """What generates: a base, loaded as `quantization` says (None: unquantized), with
    an adapter or none."""

    base: BaseTarget
    adapter: AdapterTarget | None = None
    quantization: Quantization | None = None

    @property
    def base_key(self) -> str:
        """One loaded copy of a base per source and quantization."""
        q = self.quantization
        return f"{self.base.source}|{'none' if q is None else f'{q.quant_type}-{q.double_quant}'}"


class GenerateRequest(BaseModel):
    target: Target
    # A conversation (rendered by the base's chat template, as training renders it) or a
    # text to continue.
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None  # None: up to the context's end
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class GenerateEvent(BaseModel):
    type: Literal["start", "delta", "end", "error"]
    text: str = ""
    prompt_tokens: int = 0
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    # An `error`: the HTTP status it answers and the error object (message, type, ...).
    status: int = 0
    error: dict[str, Any] | None = None


class ServerStatus(BaseModel):
    url: str
    device: str
    device_name: str
    memory_bytes: int
    memory_budget_bytes: int
    loaded: dict[str, list[str]]  # each loaded base (its key) and the adapters on it
    base_loads: int
    adapter_loads: int
    queued: int
    running: int
    cancelled: int
