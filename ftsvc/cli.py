"""`ftsvc`: run the service, a worker or the API alone, migrate, build the tiny model,
administer organizations and API keys; and, as a client of any running service (over
HTTP, ftsvc.client): upload files, create, follow and steer jobs, download adapters.

Every command that fails says so in one line on stderr (`ftsvc: error: ...`) and exits 1
(130 when interrupted; the client commands' other codes are in ftsvc.client.errors);
FTSVC_DEBUG=1 shows the traceback of an unexpected failure."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

# The database checks (ftsvc.preflight: SQLAlchemy, Alembic) are imported by the commands
# that use the database, so that the client commands start without them.
from core.settings import get_settings
from ftsvc.client import COMMANDS as CLIENT_COMMANDS
from ftsvc.errors import CliError, describe, is_expected

Command = Callable[[argparse.Namespace], None]
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


# What an API asked to stop may spend finishing its requests (open event streams never finish).
API_STOP_SECONDS = 5


def worker_command(queues: Sequence[str] = (), concurrency: int = 1) -> list[str]:
    """A Celery worker on `queues` (default: the training queue). Its pool is threads:
    the worker process stays light (no torch), drops a message for a job that is not
    queued at the cost of one query, and runs each job in a new process of its own
    (worker.job_process), which returns the job's GPU and host memory in full."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        ",".join(queues or [get_settings().training_queue]),
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "INFO",
    ]


# A preview need not wait behind a long pre-flight: two tasks at once (both threads of the
# one process share its cached tokenizers and statistics).
PREFLIGHT_CONCURRENCY = 2


def preflight_worker_command() -> list[str]:
    """The pre-flight worker, which sends webhooks too (on their own queue, if one is set)."""
    settings = get_settings()
    queues = dict.fromkeys([settings.preflight_queue, settings.webhook_queue])
    return worker_command(list(queues), PREFLIGHT_CONCURRENCY)


def cmd_migrate(_: argparse.Namespace) -> None:
    from core.migrate import upgrade_database

    upgrade_database()


def cmd_tiny_model(_: argparse.Namespace) -> None:
    from worker.tiny_model import ensure_tiny_llama

    print(ensure_tiny_llama(get_settings().models_root))


def require_admin_database() -> None:
    """The admin commands only administer: the database must exist already, with its schema."""
    from ftsvc.preflight import require_database, require_key_pepper

    require_database()
    # A pepper generated now, in a data directory the service does not use, would hash
    # keys the service never accepts.
    require_key_pepper(may_create_data_dir=False)


def cmd_create_org(args: argparse.Namespace) -> None:
    from core.auth import create_key, create_organization
    from core.db import session_scope

    require_admin_database()
    with session_scope() as session:
        org = create_organization(session, args.name)
        row, key = create_key(session, org.id, "admin")
    print(f"organization {org.id} ({args.name})\nAPI key {row.id}: {key}\n(shown once: store it now)")


def cmd_create_key(args: argparse.Namespace) -> None:
    from core.auth import create_key
    from core.db import session_scope

    require_admin_database()
    with session_scope() as session:
        row, key = create_key(session, args.organization, args.name)
    print(f"API key {row.id} for {args.organization}: {key}\n(shown once: store it now)")


def cmd_revoke_key(args: argparse.Namespace) -> None:
    from core.auth import revoke_key
    from core.db import session_scope

    require_admin_database()
    with session_scope() as session:
        revoke_key(session, args.key_id)
    print(f"revoked {args.key_id}")


def cmd_worker(args: argparse.Namespace) -> None:
    from ftsvc.preflight import require_database

    # Checked here: once Celery runs, a missing database fails each job, not the command.
    require_database()
    os.execv(sys.executable, worker_command(args.queues.split(",") if args.queues else (), args.concurrency))


def cmd_maintain(args: argparse.Namespace) -> None:
    """The maintenance loop alone (the API runs it too unless its interval is 0)."""
    import logging
    import threading

    from core import logs
    from core.maintenance import run_forever
    from ftsvc.preflight import require_database

    require_database()
    interval = args.interval or get_settings().maintenance_interval_seconds or 5.0
    logs.configure()
    logging.getLogger("ftsvc").info("maintenance loop: a round every %.1f s", interval)
    run_forever(threading.Event(), interval)


def cmd_api(args: argparse.Namespace) -> None:
    from ftsvc.preflight import require_database, require_key_pepper

    # Checked here: once uvicorn runs, a missing database fails each request, not the command.
    require_database()
    require_key_pepper(may_create_data_dir=True)
    run_api(args)


def run_api(args: argparse.Namespace) -> None:
    import uvicorn

    from core import logs

    # uvicorn's loggers propagate to the root's handler (log_config=None: it installs
    # none of its own), so its lines come in the service's format too.
    logs.configure()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level="info",
        timeout_graceful_shutdown=API_STOP_SECONDS,
    )


def cmd_inference(args: argparse.Namespace) -> None:
    from ftsvc.preflight import require_database

    # Checked here: once it serves, a missing database fails each heartbeat, not the command.
    require_database()
    from worker.inference.server import serve

    serve(args.device, args.host, args.port, args.advertise_url)


def free_local_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (the embedded inference server's:
    the API finds it through the database, so no fixed port is needed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def inference_command(device: str, host: str, port: int) -> list[str]:
    where = ["--device", device, "--host", host, "--port", str(port)]
    return [sys.executable, "-m", "ftsvc.cli", "inference", *where]


def cmd_serve(args: argparse.Namespace) -> None:
    """The embedded single-machine service: migrate, make sure the tiny model exists,
    then the API, a training worker, a pre-flight worker and an inference server on the
    CPU (on a free local port), each a process of its own,
    until SIGTERM or SIGINT stops them all (or one of them dies)."""
    from core.auth import LOCAL_KEY_FILE, ensure_local_key
    from core.db import session_scope
    from ftsvc.preflight import require_key_pepper
    from ftsvc.supervisor import Supervisor

    settings = get_settings()
    require_key_pepper(may_create_data_dir=True)
    cmd_migrate(args)
    cmd_tiny_model(args)
    with session_scope() as session:
        key = ensure_local_key(session, settings.data_dir)
    key_file = settings.data_dir / LOCAL_KEY_FILE
    if key:
        print(f"ftsvc: created the local organization and its API key: {key}\n(kept in {key_file})", flush=True)
    supervisor = Supervisor()
    try:
        supervisor.start("training worker", worker_command([settings.training_queue]))
        supervisor.start("pre-flight worker", preflight_worker_command())
        inference_port = free_local_port()
        supervisor.start("inference server", inference_command("cpu", "127.0.0.1", inference_port))
        # It registers itself before it answers: the API, once up, can send it chats.
        supervisor.wait_until_answers("inference server", f"http://127.0.0.1:{inference_port}/healthz", 120)
        api = ["--host", args.host, "--port", str(args.port)]
        supervisor.start("API", [sys.executable, "-m", "ftsvc.cli", "api", *api])
        print(f"ftsvc: API on http://{args.host}:{args.port}/v1  data in {settings.data_dir}", flush=True)
        died = supervisor.wait_for_stop()
    finally:
        # A worker's job gets the grace to checkpoint; the API is done well within it.
        supervisor.stop(settings.worker_stop_grace_seconds + API_STOP_SECONDS)
    if died:
        raise RuntimeError(f"the {died} exited; the service stopped")


def build_parser() -> argparse.ArgumentParser:
    client = "\n".join(f"  {name:<17} {help_}" for name, help_ in CLIENT_COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="ftsvc",
        description=__doc__,
        epilog=f"client commands (ftsvc COMMAND --help):\n{client}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(required=True)
    commands: tuple[tuple[str, Command, str], ...] = (
        ("serve", cmd_serve, "API, training and pre-flight workers, inference on the CPU (embedded default: SQLite)"),
        ("api", cmd_api, "the HTTP API only"),
        ("inference", cmd_inference, "an inference server on one device (the API sends it chat completions)"),
        ("worker", cmd_worker, "a Celery worker only (the training queue unless --queues)"),
        ("maintain", cmd_maintain, "the reaper and queue reconciler only (the API also runs them)"),
        ("migrate", cmd_migrate, "upgrade the database schema"),
        ("make-tiny-model", cmd_tiny_model, "write the tiny test Llama into the models root"),
        ("create-org", cmd_create_org, "create an organization and its first API key"),
        ("create-key", cmd_create_key, "create another API key for an organization"),
        ("revoke-key", cmd_revoke_key, "revoke an API key by its id"),
    )
    for name, func, help_ in commands:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        if name in ("serve", "api"):
            p.add_argument("--host", default=os.environ.get("FTSVC_HOST", "127.0.0.1"))
            p.add_argument("--port", type=int, default=int(os.environ.get("FTSVC_PORT", "8000")))
        if name == "inference":
            p.add_argument("--device", default="cpu", help="cpu or cuda:N")
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8100)
            p.add_argument("--advertise-url", default=None, help="where the API reaches it (default: http://HOST:PORT)")
        if name == "worker":
            p.add_argument("--queues", default="", help="comma-separated (default: the training queue)")
            p.add_argument("--concurrency", type=int, default=1, help="jobs at once")
        if name == "maintain":
            p.add_argument("--interval", type=float, default=None, help="seconds between rounds")
        if name == "create-org":
            p.add_argument("name")
        if name == "create-key":
            p.add_argument("organization", help="the organization id (org-...)")
            p.add_argument("--name", default="default")
        if name == "revoke-key":
            p.add_argument("key_id", help="the key's id (key-...), as create-key printed it")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command: a client command (its name first), else a service command.
    Their failures, whatever raised them, end here as one line on stderr; argparse's
    usage errors keep their own message and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CLIENT_COMMANDS:
        from ftsvc.client.app import run

        return guarded(lambda: run(argv))
    args = build_parser().parse_args(argv)
    command: Command = args.func
    return guarded(lambda: command(args))


def guarded(command: Callable[[], int | None]) -> int:
    """The command's exit code, or the one of its failure, said in one line."""
    try:
        return command() or 0
    except KeyboardInterrupt:
        if debugging():
            raise
        return fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:
        if debugging() and not is_expected(exc):
            raise
        return fail(describe(exc), exc.exit_code if isinstance(exc, CliError) else EXIT_ERROR)


def debugging() -> bool:
    return os.environ.get("FTSVC_DEBUG", "").lower() not in ("", "0", "false", "no")


def fail(message: str, code: int) -> int:
    print(f"ftsvc: error: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
