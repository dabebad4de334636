"""The generation engine of one device: base models kept loaded (the least recently used
evicted to stay within a memory budget), fine-tuned adapters loaded onto them as peft
named adapters (a second model of the same base costs only its adapter), and requests
generated in batches of the same base from one thread.

A batch is what is queued for the same base with the same sampling when the engine
turns to it (up to `max_batch`); requests that come meanwhile wait for the next turn.
Rows of a batch may use different adapters: peft routes each row through its own
(`adapter_names`); a batch of one adapter, or of the base alone, runs without the
per-row routing. Each row stops on its own (EOS, a stop sequence, its max_tokens, or its
client gone: a stopping criterion per row), and streams its text as tokens come.

The small Python API (`Engine.start`, `load`, `stream`, `generate`) is what the server
and bench/inference_speed.py call."""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from core.errors import InferenceBusy, InvalidRequest, ServiceError
from core.formats import REGISTRY
from core.inference import BaseTarget, FinishReason, GenerateEvent, GenerateRequest, Target, Usage
from core.model_cache import materialize
from core.specs import Quantization
from core.tokenization import PreparedTokenizer, prepare_tokenizer
from worker.inference.adapters import fetch_adapter
from worker.inference.text import StreamText
from worker.training.runtime import DTYPES, four_bit_config

log = logging.getLogger("ftsvc.inference")
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
Listener = Callable[[GenerateEvent], None]


class GenerationFailed(ServiceError):
    status_code = 500
    error_type = "server_error"
    default_code = "generation_failed"


def device_facts(device: str) -> tuple[str, int, str]:
    """The device's name, its memory in bytes (the host's on CPU), and the compute dtype
    training uses there (worker.training.runtime: bf16 where the GPU has it, else fp16;
    float32 on CPU)."""
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return torch.cuda.get_device_name(index), torch.cuda.get_device_properties(index).total_memory, dtype
    return "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "float32"


def default_budget(device: str, memory: int) -> int:
    """80% of a GPU (the rest: activations and the KV cache); half the host's memory on
    CPU, which the API and the workers share."""
    return int(memory * (0.8 if device.startswith("cuda") else 0.5))


@dataclass
class Generation:
    """One request in the engine, from its submission to its last event."""

    target: Target
    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None
    listener: Listener
    adapter_path: Path | None
    submitted_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    finished: bool = False
    completion_tokens: int = 0
    first_token_at: float | None = None  # time.monotonic() (what the benchmark reads)
    text: StreamText | None = None
    eos_ids: frozenset[int] = frozenset()

    @property
    def done(self) -> bool:
        return self.cancelled or self.finished

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests that may share a batch: the same base, the same sampling; a seeded
        one runs alone (its draws depend on the whole batch)."""
        sampling = ("greedy",) if self.temperature == 0 else (self.temperature, self.top_p)
        return (self.target.base_key, *sampling, id(self) if self.seed is not None else None)

    def cancel(self) -> None:
        """The client is gone: the row stops at its next token, or never starts."""
        self.cancelled = True

    def begin(self, tokenizer: Any, eos_ids: frozenset[int]) -> None:
        self.text, self.eos_ids = StreamText(tokenizer, self.stop), eos_ids
        self.listener(GenerateEvent(type="start", prompt_tokens=len(self.prompt_ids)))

    def add_token(self, token: int) -> None:
        if self.done or self.text is None:
            return
        self.completion_tokens += 1
        self.first_token_at = self.first_token_at or time.monotonic()
        if token in self.eos_ids:
            self.end("stop")
            return
        delta = self.text.add(token)
        if delta:
            self.listener(GenerateEvent(type="delta", text=delta))
        if self.text.stopped:
            self.end("stop")
        elif self.completion_tokens >= self.max_tokens:
            self.end("length")

    def end(self, reason: FinishReason) -> None:
        if self.done or self.text is None:
            return
        rest = self.text.rest()
        if rest:
            self.listener(GenerateEvent(type="delta", text=rest))
        self.finished = True
        prompt, completion = len(self.prompt_ids), self.completion_tokens
        usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
        self.listener(GenerateEvent(type="end", finish_reason=reason, usage=usage))

    def fail(self, error: ServiceError) -> None:
        if self.done:
            return
        self.finished = True
        body = {"message": error.message, "type": error.error_type, "param": error.param, "code": error.code}
        self.listener(GenerateEvent(type="error", status=error.status_code, error=body))


class _Rows(BaseStreamer):
    """Hands each row of a batch its new token (generate's first call: the prompts)."""

    def __init__(self, batch: list[Generation]) -> None:
        self.batch, self.prompt_seen = batch, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for generation, token in zip(self.batch, value.tolist(), strict=True):
            generation.add_token(int(token))

    def end(self) -> None:
        pass


class _RowsDone(StoppingCriteria):
    """A row is done when it finished or its client is gone (read after each token)."""

    def __init__(self, batch: list[Generation]) -> None:
        self.batch = batch

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        done: torch.BoolTensor = torch.tensor([g.done for g in self.batch], device=input_ids.device)  # type: ignore[assignment]
        return done


@dataclass
class LoadedBase:
    model: Any  # the transformers model, a PeftModel once an adapter is loaded on it
    prepared: PreparedTokenizer
    memory_bytes: int
    # Adapter names loaded on it, least recently used first.
    adapters: OrderedDict[str, None] = field(default_factory=OrderedDict)


def adapter_name(key: str) -> str:
    """A peft adapter name for the adapter stored at `key` (peft names are module
    attribute names: no dots or slashes)."""
    return "a" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _estimated_bytes(source: str, quantization: Quantization | None, dtype: torch.dtype) -> int:
    """What a base will take once loaded, from its safetensors files (stored in 16 bits):
    about 0.3 of them in 4 bits (4.5 bits a weight, the embeddings and head unquantized),
    else scaled to the compute dtype."""
    stored = sum(p.stat().st_size for p in Path(source).glob("*.safetensors"))
    return int(stored * 0.3) if quantization is not None else stored * dtype.itemsize // 2


class Engine:
    def __init__(
        self,
        device: str = "cpu",
        memory_budget_bytes: int = 0,
        max_batch: int = 8,
        max_queue: int = 64,
        max_adapters: int = 16,
        cpu_threads: int = 0,
    ) -> None:
        """`cpu_threads`: torch's threads for this process on CPU (0: torch's default)."""
        self.device = device
        if cpu_threads and not device.startswith("cuda"):
            torch.set_num_threads(cpu_threads)
        self.device_name, self.memory_bytes, compute = device_facts(device)
        self.dtype = DTYPES[compute]
        self.memory_budget = memory_budget_bytes or default_budget(device, self.memory_bytes)
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.bases: OrderedDict[str, LoadedBase] = OrderedDict()  # least recently used first
        self.base_loads = self.adapter_loads = self.cancelled = 0
        self._tokenizers: dict[str, tuple[PreparedTokenizer, int]] = {}
        self._tokenizer_lock = threading.Lock()
        # Held while the models change or generate (the engine's thread, or `load`).
        self._model_lock = threading.Lock()
        self._queue: list[Generation] = []
        self._running: list[Generation] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)

    # -- the Python API ------------------------------------------------------------------
    def start(self) -> Engine:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout=30)

    def load(self, target: Target) -> None:
        """Load the target's base and adapter now (a warm-up: requests load them anyway)."""
        path = fetch_adapter(target.adapter) if target.adapter is not None else None
        with self._model_lock:
            base = self._base(target)
            if path is not None and target.adapter is not None:
                self._adapter(base, target.adapter.key, path, set())

    def submit(self, request: GenerateRequest, listener: Listener) -> Generation:
        """Queue a request: its events go to `listener` (from the engine's thread). 400
        for a prompt or max_tokens that does not fit the context, 404 for an adapter
        whose files are gone, 429 when the queue is full."""
        prompt_ids, max_tokens = self.prepare(request)
        path = fetch_adapter(request.target.adapter) if request.target.adapter is not None else None
        generation = Generation(
            request.target,
            prompt_ids,
            max_tokens,
            request.temperature,
            request.top_p,
            request.stop,
            request.seed,
            listener,
            path,
        )
        with self._wake:
            if len(self._queue) >= self.max_queue:
                raise InferenceBusy(
                    f"The inference server on {self.device} has {len(self._queue)} requests waiting, its limit; "
                    "retry shortly"
                )
            self._queue.append(generation)
            self._wake.notify()
        return generation

    def stream(self, request: GenerateRequest) -> Iterator[GenerateEvent]:
        """The request's events as they come (an error ends them as an `error` event)."""
        events: SimpleQueue[GenerateEvent] = SimpleQueue()
        generation = self.submit(request, events.put)
        try:
            while True:
                event = events.get()
                yield event
                if event.type in ("end", "error"):
                    return
        finally:
            generation.cancel()

    def generate(self, request: GenerateRequest) -> tuple[str, GenerateEvent]:
        """The whole text and the last event (`end`, with the usage, or `error`)."""
        text, last = [], GenerateEvent(type="end")
        for event in self.stream(request):
            text.append(event.text)
            last = event
        return "".join(text), last

    def status(self) -> dict[str, Any]:
        with self._wake:
            queued, running = len(self._queue), sum(not g.done for g in self._running)
        return {
            "device": self.device,
            "device_name": self.device_name,
            "memory_bytes": self.memory_bytes,
            "memory_budget_bytes": self.memory_budget,
            "loaded": {key: list(base.adapters) for key, base in list(self.bases.items())},
            "base_loads": self.base_loads,
            "adapter_loads": self.adapter_loads,
            "queued": queued,
            "running": running,
            "cancelled": self.cancelled,
        }

    # -- preparing a request (the caller's thread) -----------------------------------------
    def tokenizer(self, base: BaseTarget) -> tuple[PreparedTokenizer, int]:
        """The base's tokenizer as training prepares it, and its context length."""
        with self._tokenizer_lock:
            if base.source not in self._tokenizers:
                ref = materialize(base.ref(), weights=False)
                config = AutoConfig.from_pretrained(ref.source, trust_remote_code=False)
                self._tokenizers[base.source] = (prepare_tokenizer(ref), int(config.max_position_embeddings))
            return self._tokenizers[base.source]

    def prepare(self, request: GenerateRequest) -> tuple[list[int], int]:
        """The prompt's tokens (a conversation rendered as training renders it) and the
        tokens it may generate."""
        prepared, context = self.tokenizer(request.target.base)
        if request.messages is not None:
            param = "messages"
            ids = prepared.generation_prompt(REGISTRY["chat"].to_example({"messages": request.messages}))
        else:
            param = "prompt"
            ids = list(prepared.tokenizer(request.prompt or "", add_special_tokens=True)["input_ids"])
        name, n = request.target.base.name, len(ids)
        if n >= context:
            raise InvalidRequest(
                f"The prompt is {n} tokens long; {name}'s context is {context} tokens, which leaves no room for "
                "a reply",
                param=param,
                code="context_length_exceeded",
                extra={"prompt_tokens": n},
            )
        if request.max_tokens is None:
            return ids, context - n
        if request.max_tokens > context - n:
            raise InvalidRequest(
                f"max_tokens is {request.max_tokens}, but {name}'s context is {context} tokens and the prompt takes "
                f"{n}: at most {context - n} tokens can be generated",
                param="max_tokens",
                code="context_length_exceeded",
                extra={"prompt_tokens": n},
            )
        return ids, request.max_tokens

    # -- the engine's thread --------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                with self._model_lock:
                    self._generate(batch)
            except Exception as exc:
                log.exception("a batch of %d failed", len(batch))
                error = exc if isinstance(exc, ServiceError) else GenerationFailed(f"Generation failed: {exc}")
                for generation in batch:
                    generation.fail(error)
            finally:
                self.cancelled += sum(g.cancelled and not g.finished for g in batch)
                with self._wake:
                    self._running = []

    def _next_batch(self) -> list[Generation] | None:
        with self._wake:
            while not self._stopping:
                self.cancelled += sum(g.cancelled for g in self._queue)
                self._queue = [g for g in self._queue if not g.cancelled]
                if self._queue:
                    key = self._queue[0].batch_key
                    batch = [g for g in self._queue if g.batch_key == key][: self.max_batch]
                    self._queue = [g for g in self._queue if g not in batch]
                    self._running = batch
                    return batch
                self._wake.wait()
            return None

    def _base(self, target: Target) -> LoadedBase:
        key = target.base_key
        if key in self.bases:
            self.bases.move_to_end(key)
            return self.bases[key]
        ref = materialize(target.base.ref())  # a registered model's weights, on this host
        need = _estimated_bytes(ref.source, target.quantization, self.dtype)
        while self.bases and sum(b.memory_bytes for b in self.bases.values()) + need > self.memory_budget:
            evicted, _ = self.bases.popitem(last=False)
            log.info("evicted %s to load %s", evicted, key)
            gc.collect()
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
        # As training loaded it: 4 bits (NF4 by default) where the spec quantized, on CPU
        # too (bitsandbytes runs 4-bit layers there): the adapter learned against those
        # quantized weights, and full-precision ones would shift what it answers.
        quantization = four_bit_config(target.quantization, self.dtype)
        started = time.monotonic()
        model = AutoModelForCausalLM.from_pretrained(
            ref.source,
            quantization_config=quantization,
            dtype=self.dtype,
            device_map={"": self.device},
            use_safetensors=True,
            trust_remote_code=False,
        )
        model.eval()
        prepared, _ = self.tokenizer(target.base)
        self.bases[key] = LoadedBase(model, prepared, int(model.get_memory_footprint()))
        self.base_loads += 1
        log.info("loaded %s on %s in %.1f s", key, self.device, time.monotonic() - started)
        return self.bases[key]

    def _adapter(self, base: LoadedBase, key: str, path: Path, keep: set[str]) -> str:
        """The adapter's name on `base`, loaded if it is not (evicting the least recently
        used adapter not in `keep`, the batch's, beyond `max_adapters`)."""
        name = adapter_name(key)
        if name in base.adapters:
            base.adapters.move_to_end(name)
            return name
        if len(base.adapters) >= self.max_adapters:
            stale = next((n for n in base.adapters if n not in keep), None)
            if stale is not None:
                base.model.delete_adapter(stale)
                del base.adapters[stale]
        if isinstance(base.model, PeftModel):
            base.model.load_adapter(str(path), adapter_name=name)
        else:
            base.model = PeftModel.from_pretrained(base.model, str(path), adapter_name=name)
        base.model.eval()
        base.adapters[name] = None
        self.adapter_loads += 1
        return name

    def _generate(self, batch: list[Generation]) -> None:
        first = batch[0]
        base = self._base(first.target)
        names: list[str] = []
        for generation in batch:
            adapter = generation.target.adapter
            if adapter is None or generation.adapter_path is None:
                names.append(BASE)
            else:
                names.append(self._adapter(base, adapter.key, generation.adapter_path, set(names)))
        tokenizer = base.prepared.tokenizer
        for generation in batch:
            generation.begin(tokenizer, base.prepared.eos_ids)
        inputs = self._padded([g.prompt_ids for g in batch], tokenizer.pad_token_id)
        sampling: dict[str, Any] = (
            {"do_sample": False}
            if first.temperature == 0
            else {"do_sample": True, "temperature": first.temperature, "top_p": first.top_p, "top_k": 0}
        )
        routing, adapters = self._routing(base, names)
        if first.seed is not None:
            torch.manual_seed(first.seed)
        with adapters, torch.inference_mode():
            base.model.generate(
                **inputs,
                **sampling,
                **routing,
                max_new_tokens=max(g.max_tokens for g in batch),
                streamer=_Rows(batch),
                stopping_criteria=StoppingCriteriaList([_RowsDone(batch)]),
                eos_token_id=sorted(base.prepared.eos_ids),
                pad_token_id=tokenizer.pad_token_id,
            )
        for generation in batch:  # (a row cut short by the batch's end: its max_tokens)
            generation.end("length")
        tokens = [g.completion_tokens for g in batch]
        gone = sum(g.cancelled and not g.finished for g in batch)
        log.info("a batch of %d generated %s tokens (%d rows' clients left)", len(batch), tokens, gone)

    def _routing(self, base: LoadedBase, names: list[str]) -> tuple[dict[str, Any], AbstractContextManager[Any]]:
        """generate's arguments and context for the rows' adapters: one adapter for all
        set active, the base alone with the adapters off, else peft's per-row routing."""
        if not isinstance(base.model, PeftModel):
            return {}, nullcontext()
        if len(set(names)) > 1:
            return {"adapter_names": names}, nullcontext()
        if names[0] == BASE:
            return {}, base.model.disable_adapter()
        base.model.set_adapter(names[0])
        return {}, nullcontext()

    def _padded(self, prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
        """The prompts padded on the left (each row's next token comes at the end)."""
        width = max(map(len, prompts))
        ids = [[pad_id] * (width - len(p)) + p for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": torch.tensor(mask, device=self.device),
        }
