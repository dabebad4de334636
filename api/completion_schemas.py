"""OpenAI's chat completion and (legacy) completion objects: the requests the official
client sends, the answers, and the chunks of a stream."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.schemas import _Wire
from core.inference import FinishReason, Usage

MAX_STOP_SEQUENCES = 4


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None

    def for_formats(self) -> dict[str, Any]:
        """The message as core.formats reads a chat row's (OpenAI's `developer` role is
        its newer name for `system`)."""
        message = self.model_dump(exclude_none=True)
        return message | {"role": "system"} if self.role == "developer" else message


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(description="A base model, or one of the organization's fine-tuned models (ft:...)")
    max_tokens: Annotated[int, Field(gt=0)] | None = Field(
        None, description="At most this many tokens are generated (default: up to the model's context)"
    )
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = Field(None, description=f"Up to {MAX_STOP_SEQUENCES} sequences that end the reply")
    seed: int | None = Field(None, description="Sampling with the same seed and request gives the same reply")
    n: int = Field(1, description="Only 1")
    stream: bool = Field(False, description="Answer with Server-Sent Events of chunks, then `data: [DONE]`")
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only one choice per request is generated (n=1)")
        return n

    @field_validator("stop")
    @classmethod
    def _stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP_SEQUENCES or not all(stops):
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} non-empty stop sequences")
        return stop

    def stop_sequences(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(gt=0)] | None = Field(None, description="The newer name of max_tokens")


class CompletionRequest(_Sampling):
    prompt: str = Field(description="The text to continue")
    max_tokens: Annotated[int, Field(gt=0)] | None = Field(16, description="At most this many tokens (OpenAI's 16)")


class AssistantMessage(_Wire):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Wire):
    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(_Wire):
    """OpenAI's chat completion object (`stream: false`)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class ChatDelta(_Wire):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Wire):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Wire):
    """One event of a chat completion stream: the first has the role, the next the text
    as it comes, the last the finish reason (then, with `stream_options.include_usage`,
    one with the usage and no choices)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class CompletionChoice(_Wire):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: FinishReason | None


class Completion(_Wire):
    """OpenAI's completion object; a stream sends it in pieces (`finish_reason` null until
    the last)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
