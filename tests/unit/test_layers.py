"""The boundaries between the layers, checked on the code itself: SQL is written only in
core/ (and migrations/), and the training recipe imports nothing of the service around
it (database, broker, API), so it runs from a plain script."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Product code outside core/: what a reviewer should never find a query in.
OUTSIDE_CORE = ("api", "worker", "ftsvc", "bench")
SQL = re.compile(r"(?<![.\w])(select|update|delete|insert)\(|\bsession\.(execute|scalar|scalars|query|get)\(")
# What worker/training/ may import from the project: the spec (and its validation errors
# in the user's terms), data reading and tokenization (of examples and of preference
# pairs), the examples' tasks, the vocabulary of states, the domain's errors, the memory
# estimate its speed settings share with routing, the settings (where the worker keeps
# its pre-quantized bases) and itself.
RECIPE_MAY_IMPORT = {
    "core.datasets",
    "core.errors",
    "core.formats",
    "core.memory_estimate",
    "core.preference_format",
    "core.preferences",
    "core.registry",
    "core.settings",
    "core.specs",
    "core.states",
    "core.tasks",
    "core.tokenization",
    "core.validation_errors",
}
# (redis is left out: a training library imports its client by itself.)
SERVICE_MODULES = ("sqlalchemy", "celery", "kombu", "fastapi", "starlette", "core.db", "core.models", "core.queue")


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_no_sql_outside_core() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in python_files(*OUTSIDE_CORE)
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if SQL.search(line)
    ]
    assert not found, "queries belong in a named function of core/:\n" + "\n".join(found)


def test_the_sql_check_finds_queries() -> None:
    # The pattern itself: what it must catch, and method calls it must leave alone.
    assert SQL.search("rows = session.scalars(select(Job))") and SQL.search("update(Job).values(x=1)")
    assert not SQL.search("values.update(other)") and not SQL.search("app.conf.update(task_acks_late=True)")


def project_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.split(".")[0] in ("core", "api", "worker", "ftsvc")}


@pytest.mark.parametrize("path", python_files("worker/training"), ids=lambda p: p.name)
def test_the_recipe_imports_only_what_a_training_run_needs(path: Path) -> None:
    outside = {m for m in project_imports(path) if not m.startswith("worker.training")} - RECIPE_MAY_IMPORT
    assert not outside, f"{path.name} imports {sorted(outside)}"


def test_importing_the_recipe_loads_no_database_broker_or_api() -> None:
    script = (
        "import sys, worker.training.__main__, worker.training.recipe; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_MODULES!r} or m in {SERVICE_MODULES!r}))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
