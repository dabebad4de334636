"""Inference servers: a long-lived process per device (`ftsvc inference`) that keeps base
models loaded and switches fine-tuned adapters per request (engine), behind an internal
HTTP API the public API proxies to (server; the protocol: core.inference)."""
