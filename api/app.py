"""The FastAPI application: routers per resource and one error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Response

from api import dashboard, metrics
from api.deps import refuse_nul_characters, refuse_unknown_query_parameters
from api.docs import install_offline_docs
from api.error_responses import error_responses, install_error_handlers
from api.openapi import DocumentedApp, ModelRoute
from api.routes import completions, evaluations, files, jobs, merges, models, organization, webhooks
from api.schemas import Health, Readiness, ReadinessCheck
from core import readiness
from core.maintenance import start_thread
from core.settings import get_settings

# The error statuses each resource answers, declared per router so that routes added to
# it later are described too (api.error_responses has the body they share). 400 everywhere: any
# query parameter may carry a NUL (api.deps.refuse_nul_characters) or be one the route does
# not take (api.deps.refuse_unknown_query_parameters). 503 everywhere: every
# route reads the database (api.error_responses says an outage as one).
ROUTER_ERRORS = {
    files: error_responses(400, 401, 403, 404, 409, 413, 422, 500, 503),
    jobs: error_responses(400, 401, 403, 404, 409, 422, 429, 500, 503),
    models: error_responses(400, 401, 404, 409, 500, 503),
    merges: error_responses(400, 401, 403, 404, 409, 422, 500, 503),
    evaluations: error_responses(400, 401, 403, 404, 409, 422, 500, 503),
    organization: error_responses(400, 401, 500, 503),
    webhooks: error_responses(400, 401, 404, 500, 503),
    completions: error_responses(400, 401, 404, 409, 429, 500, 503),
}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Every API process runs the maintenance loop (reaper, queue reconciler, clean-ups):
    wherever the service runs, something finds dead workers and lost messages."""
    interval = get_settings().maintenance_interval_seconds
    stop = start_thread(interval) if interval > 0 else None
    yield
    if stop is not None:
        stop.set()


def create_app() -> FastAPI:
    app = DocumentedApp(
        lifespan=lifespan,
        title="Fine-tuning service",
        version="0.1.0",
        description="QLoRA fine-tuning of open-weight models, with an OpenAI-compatible API under /v1.",
        dependencies=[Depends(refuse_nul_characters), Depends(refuse_unknown_query_parameters)],
        # FastAPI's pages load Swagger UI and ReDoc from CDNs: ours serve them (api.docs).
        docs_url=None,
        redoc_url=None,
    )
    install_offline_docs(app)
    install_error_handlers(app)
    for module, errors in ROUTER_ERRORS.items():
        app.include_router(module.router, responses=errors)

    health_router = APIRouter(tags=["health"], route_class=ModelRoute)

    @health_router.get("/healthz")
    def health() -> Health:
        """The process is up (liveness); /readyz says whether it can serve."""
        return Health()

    @health_router.get(
        "/readyz",
        response_model=None,
        responses={
            200: {"model": Readiness, "description": "The database, the broker and the store all answered"},
            503: {"model": Readiness, "description": "At least one part did not answer: `checks` says which"},
        },
    )
    def ready() -> Response:
        """Whether this process can serve requests: the database, the broker and the
        artifact store each answer within FTSVC_READINESS_TIMEOUT_SECONDS. For load
        balancers and orchestrators; no API key."""
        results = readiness.check_all()
        body = Readiness(
            status="ready" if all(r.ok for r in results) else "not_ready",
            checks={r.name: ReadinessCheck(ok=r.ok, seconds=round(r.seconds, 4), error=r.error) for r in results},
        )
        status = 200 if body.status == "ready" else 503
        return Response(body.model_dump_json(), status_code=status, media_type="application/json")

    app.include_router(health_router)
    metrics.install(app)
    dashboard.install(app)
    return app
