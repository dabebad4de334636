"""`ftsvc inference`: one engine (worker.inference.engine) on one device behind the
internal HTTP API the public API proxies to (the protocol: core.inference), recorded in
the database with a heartbeat so that the API finds it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from core import inference_servers
from core.db import session_scope
from core.errors import InferenceUnavailable, ServiceError, ServiceUnavailable
from core.inference import GenerateEvent, GenerateRequest, ServerStatus
from core.settings import get_settings
from worker.inference.engine import Engine

log = logging.getLogger("ftsvc.inference")


def _error(status: int, body: Mapping[str, object], retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    body = {"message": exc.message, "type": exc.error_type, "param": exc.param, "code": exc.code, **exc.extra}
    return _error(exc.status_code, body, exc.retry_after if isinstance(exc, ServiceUnavailable) else None)


def _invalid(_: Request, exc: Exception) -> JSONResponse:
    body = {"message": f"Invalid generation request: {exc}", "type": "invalid_request_error", "param": None}
    return _error(400, body | {"code": "invalid_request"})


class Heartbeat:
    """Records the server in the database now and every `inference_heartbeat_seconds`
    (with the bases it holds); removes it when stopped."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine, self.url, self.started_at = engine, url, time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-heartbeat", daemon=True)

    def beat(self) -> None:
        engine = self.engine
        with session_scope() as session:
            inference_servers.heartbeat(
                session,
                self.url,
                engine.device,
                engine.device_name,
                engine.memory_bytes,
                list(engine.bases),
                self.started_at,
            )

    def _run(self) -> None:
        while not self._stop.wait(get_settings().inference_heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # the database may be back at the next beat
                log.exception("inference server heartbeat failed")

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with session_scope() as session:
            inference_servers.remove(session, self.url)


def create_app(engine: Engine, url: str) -> FastAPI:
    heartbeat = Heartbeat(engine, url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        heartbeat.start()
        yield
        heartbeat.stop()
        engine.stop()

    app = FastAPI(title="ftsvc inference server (internal)", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/internal/status")
    def status() -> ServerStatus:
        return ServerStatus(url=url, **engine.status())

    @app.post("/internal/generate", response_model=None)
    async def generate(request: GenerateRequest) -> StreamingResponse | JSONResponse:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerateEvent] = asyncio.Queue()

        def listener(event: GenerateEvent) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        # (a thread: tokenizing, and a first fetch of the adapter from storage)
        generation = await run_in_threadpool(engine.submit, request, listener)
        timeout = get_settings().inference_queue_timeout_seconds
        try:
            first = await asyncio.wait_for(events.get(), timeout)
        except TimeoutError:
            generation.cancel()
            raise InferenceUnavailable(
                f"The inference server on {engine.device} could not start the request within {timeout:g} s; retry later"
            ) from None
        except asyncio.CancelledError:
            generation.cancel()
            raise
        if first.type == "error" and first.error is not None:
            return _error(first.status, first.error)

        async def lines() -> AsyncIterator[str]:
            try:
                event = first
                while True:
                    yield event.model_dump_json(exclude_defaults=True) + "\n"
                    if event.type in ("end", "error"):
                        return
                    event = await events.get()
            finally:  # the client is gone (or the generation ended: then a no-op)
                generation.cancel()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    return app


def serve(device: str, host: str, port: int, advertise_url: str | None) -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    engine = Engine(
        device,
        settings.inference_memory_budget_bytes,
        settings.inference_max_batch,
        settings.inference_max_queue,
        settings.inference_max_adapters,
        settings.inference_cpu_threads,
    )
    url = advertise_url or f"http://{host}:{port}"
    log.info("inference server on %s (%s), reachable at %s", device, engine.device_name, url)
    uvicorn.run(create_app(engine, url), host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
