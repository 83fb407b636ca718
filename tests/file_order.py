"""The suite's files, longest first: with pytest-xdist handing out whole files (``--dist loadfile``), a long file
started last keeps one process busy while the other has finished. Each file's time is read from
``tests/file_durations.json``, which ``--record-file-durations`` updates with the files a run ran (the time of a
file's tests, setup and teardown included); a file not in it yet runs first, as if it were the longest.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

DURATIONS = Path(__file__).with_name("file_durations.json")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--record-file-durations", action="store_true",
                     help=f"record each test file's time in this run in tests/{DURATIONS.name}")


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _recorded() -> dict[str, float]:
    try:
        durations = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return {}
    return {name: float(seconds) for name, seconds in durations.items()} if isinstance(durations, dict) else {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files in order of their recorded time, longest (or unknown) first; a file's tests keep their order."""
    durations = _recorded()
    items.sort(key=lambda item: -durations.get(_file(item.nodeid), math.inf))


class _Recorder:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[_file(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if session.testsfailed or session.shouldstop:
            return  # (a failed run's times would misorder the files)
        root = DURATIONS.parent.parent
        durations = {name: seconds for name, seconds in _recorded().items() if (root / name).is_file()}
        durations.update({name: round(seconds, 1) for name, seconds in self.seconds.items()})
        DURATIONS.write_text(json.dumps(dict(sorted(durations.items(), key=lambda kv: -kv[1])), indent=1) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--record-file-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Recorder(), "file-durations-recorder")
