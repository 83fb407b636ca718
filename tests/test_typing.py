"""``mypy --strict`` (pyproject's ``[tool.mypy]``) holds for the plugin SDK — what plugin authors type-check
against (``py.typed`` ships) — and for the domain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ["hub/connectors.py", "hub/hookspecs.py", "hub/testing.py", "hub/domain"]


def test_the_sdk_and_the_domain_pass_mypy_strict():
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", *CHECKED], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
