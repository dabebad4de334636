"""The installed package works away from the source tree, as in the GPU image (which
installs the project, not a checkout): the migrations and the dashboard travel with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from api.dashboard import STATIC
from tests.conftest import ROOT

LOCAL_FOLDERS = (".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache")
# Which copy of the code runs, then the migration, exiting with the command's status.
SCRIPT = "import sys, core; print(core.__file__); from ftsvc.cli import main; sys.exit(main(['migrate']))"


def test_an_installed_ftsvc_migrates_a_database_outside_the_source_tree(tmp_path: Path) -> None:
    # Built from a copy: setuptools leaves build/ and egg-info folders where it builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*LOCAL_FOLDERS))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ftsvc-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert (site / "migrations" / "script.py.mako").is_file()
    # The dashboard the API serves, every file of it.
    shipped = site / "api" / "dashboard" / "static"
    source_assets = {p.relative_to(STATIC) for p in STATIC.rglob("*") if p.is_file()}
    assert source_assets and {p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()} == source_assets
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSVC_")} | {
        "PYTHONPATH": str(site),
        "FTSVC_DATA_DIR": str(tmp_path / "data"),
    }
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith(str(site)), run.stdout  # the installed copy ran, not the checkout
    assert (tmp_path / "data" / "ftsvc.db").is_file()
