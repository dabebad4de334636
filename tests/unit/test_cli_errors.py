"""`ftsvc` fails with one line on stderr that says what is wrong and what to do, never a
traceback: the real command, run as a subprocess from a directory outside the repository."""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from core.migrate import alembic_config
from tests.conftest import DATABASE_URL, ROOT

UNREACHABLE = "postgresql+psycopg://postgres:secret@127.0.0.1:1/nothing"


def ftsvc(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ftsvc.cli", *args],
        cwd=cwd,
        env=env | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def outside(**settings: str) -> dict[str, str]:
    """The environment of a shell with none of the test suite's FTSVC_ settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FTSVC_")} | settings


def on_test_database(**settings: str) -> dict[str, str]:
    """The test suite's settings (tests/conftest.py): its Postgres, broker and pepper."""
    return dict(os.environ) | settings


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftsvc: error: "), result.stderr
    return lines[0]


def sqlite_file(path: Path, *statements: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
    return path


def schema_version(revision: str) -> list[str]:
    """The statements that make a SQLite file claim a schema revision (and have no tables)."""
    return [
        "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        f"INSERT INTO alembic_version VALUES ('{revision}')",
    ]


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


@pytest.mark.parametrize(
    "command", [["create-org", "research"], ["create-key", "org-x"], ["revoke-key", "key-x"], ["api"], ["worker"]]
)
def test_outside_the_repository_it_says_where_it_looked_and_creates_nothing(tmp_path: Path, command: list[str]) -> None:
    line = error_line(ftsvc(*command, cwd=tmp_path, env=outside()))
    assert f"no database at {tmp_path.resolve() / 'var' / 'ftsvc.db'}" in line
    assert "FTSVC_DATA_DIR" in line and "relative to the current directory" in line and "ftsvc migrate" in line
    assert list(tmp_path.iterdir()) == []  # no ./var, no empty database, no key pepper


def test_an_unknown_key_or_organization_is_named(tmp_path: Path) -> None:
    line = error_line(ftsvc("revoke-key", "key-nonexistent", cwd=tmp_path, env=on_test_database()))
    assert "No API key with id 'key-nonexistent'" in line and "key-..." in line
    line = error_line(ftsvc("create-key", "org-nonexistent", cwd=tmp_path, env=on_test_database()))
    assert "No organization with id 'org-nonexistent'" in line and "create-org" in line


# migrate reaches the database through Alembic, so its failure passes through main's
# wrapper rather than the command's own check.
@pytest.mark.parametrize("command", [["create-org", "research"], ["migrate"]])
def test_an_unreachable_postgres_is_named_without_its_password(tmp_path: Path, command: list[str]) -> None:
    result = ftsvc(*command, cwd=tmp_path, env=outside(FTSVC_DATABASE_URL=UNREACHABLE, FTSVC_KEY_PEPPER="p"))
    line = error_line(result)
    assert "postgres:***@127.0.0.1:1/nothing" in line and "Connection refused" in line
    assert "secret" not in result.stderr + result.stdout


@pytest.fixture
def unmigrated_postgres() -> Iterator[str]:
    """An empty database beside the test database (named after it, so parallel runs on
    other test databases do not meet)."""
    url = sa.make_url(DATABASE_URL)
    empty = url.set(database=f"{url.database}_unmigrated")
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{empty.database}" WITH (FORCE)'))
        connection.execute(sa.text(f'CREATE DATABASE "{empty.database}"'))
    yield empty.render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{empty.database}" WITH (FORCE)'))
    admin.dispose()


def test_a_postgres_database_never_migrated(tmp_path: Path, unmigrated_postgres: str) -> None:
    line = error_line(
        ftsvc("create-org", "x", cwd=tmp_path, env=on_test_database(FTSVC_DATABASE_URL=unmigrated_postgres))
    )
    assert "never migrated" in line and "run 'ftsvc migrate'" in line


@pytest.mark.parametrize(
    ("statements", "said"),
    [
        (["CREATE TABLE unrelated (x INTEGER)"], "never migrated"),
        (schema_version("0001"), "schema revision 0001"),
        # The schema claims the newest revision but its tables are gone: the command's
        # own check passes and the database's error reaches main's wrapper.
        ([], "no such table"),
    ],
    ids=["never-migrated", "old-revision", "tables-missing"],
)
def test_a_sqlite_database_without_the_schema(tmp_path: Path, statements: list[str], said: str) -> None:
    sqlite_file(tmp_path / "data" / "ftsvc.db", *(statements or schema_version(head_revision())))
    line = error_line(ftsvc("create-org", "x", cwd=tmp_path, env=outside(FTSVC_DATA_DIR="data")))
    assert said in line and "ftsvc migrate" in line


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"FTSVC_MAX_ACTIVE_JOBS_PER_ORG": "many"}, "invalid setting FTSVC_MAX_ACTIVE_JOBS_PER_ORG"),
        ({"FTSVC_KEY_PEPPER": ""}, "FTSVC_KEY_PEPPER is not set"),
        ({"FTSVC_DATABASE_URL": "not a url"}, "FTSVC_DATABASE_URL is not a database URL"),
    ],
    ids=["invalid-number", "no-pepper-on-postgres", "unparsable-url"],
)
def test_bad_settings_name_the_variable(tmp_path: Path, settings: dict[str, str], said: str) -> None:
    line = error_line(ftsvc("create-org", "x", cwd=tmp_path, env=on_test_database(**settings)))
    assert said in line and "many" not in line  # the value itself is not repeated (it may be a secret)


def test_an_unexpected_failure_is_one_line_unless_debugging(tmp_path: Path) -> None:
    (tmp_path / "not-a-directory").write_text("")
    env = outside(FTSVC_DATA_DIR="not-a-directory")
    line = error_line(ftsvc("migrate", cwd=tmp_path, env=env))
    assert "FileExistsError" in line and "set FTSVC_DEBUG=1 for the traceback" in line
    debugging = ftsvc("migrate", cwd=tmp_path, env=env | {"FTSVC_DEBUG": "1"})
    assert debugging.returncode == 1 and "Traceback" in debugging.stderr


def test_usage_errors_stay_argparse_s(tmp_path: Path) -> None:
    result = ftsvc("create-org", cwd=tmp_path, env=outside())
    assert result.returncode == 2 and "usage: ftsvc create-org" in result.stderr and "Traceback" not in result.stderr


def read_until(process: subprocess.Popen[bytes], text: bytes, timeout: float) -> bytes:
    """What the process wrote to stderr up to `text`, without blocking past the timeout."""
    assert process.stderr is not None
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and process.poll() is None, seen.decode()
        if select.select([process.stderr], [], [], remaining)[0]:
            seen += os.read(process.stderr.fileno(), 4096)
    return seen


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ftsvc.cli", "maintain", "--interval", "60"],
        cwd=tmp_path,
        env=on_test_database(PYTHONPATH=str(ROOT)),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        read_until(process, b"maintenance loop", timeout=60)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert b"Traceback" not in rest and rest.decode().splitlines()[-1] == "ftsvc: error: interrupted"


def test_outside_the_repository_it_works_on_the_configured_data_directory(tmp_path: Path) -> None:
    env = outside(FTSVC_DATA_DIR=str(tmp_path / "data"))
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert ftsvc("migrate", cwd=work, env=env).returncode == 0
    created = ftsvc("create-org", "research", cwd=work, env=env)
    assert created.returncode == 0, created.stderr
    assert "ftsk-" in created.stdout and created.stdout.startswith("organization org-")
    key_id = created.stdout.split("API key ")[1].split(":")[0]
    revoked = ftsvc("revoke-key", key_id, cwd=work, env=env)
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"revoked {key_id}", revoked.stderr
    assert list(work.iterdir()) == []  # everything went to FTSVC_DATA_DIR
