"""The FastAPI application: routers per resource and one error shape."""

from __future__ import annotations

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.routes import files, jobs, models


def create_app() -> FastAPI:
    app = FastAPI(
        title="Fine-tuning service",
        version="0.1.0",
        description="QLoRA fine-tuning of open-weight models, with an OpenAI-compatible API under /v1.",
    )
    install_error_handlers(app)
    for module in (files, jobs, models):
        app.include_router(module.router)

    @app.get("/healthz", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
