"""Imports run one way: the import-linter contracts in pyproject.toml hold for the tree — and do catch a
violation (a copy of the package whose SDK imports the core is refused)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                              "sys.exit(lint_imports_command())", "--config", str(ROOT / "pyproject.toml"), "--no-cache"]


def lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(LINT, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    result = lint(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_sdk_module_importing_the_core_breaks_them(tmp_path):
    shutil.copytree(ROOT / "hub", tmp_path / "hub", ignore=shutil.ignore_patterns("__pycache__"))
    sdk = tmp_path / "hub" / "connectors.py"
    sdk.write_text(sdk.read_text() + "\nfrom hub.domain.catalog import CatalogWriter  # noqa: E402\n")
    result = lint(tmp_path, tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout, result.stdout
    assert "hub.connectors -> hub.domain.catalog" in result.stdout, result.stdout
