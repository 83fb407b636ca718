"""The runner of each job kind (the ``RunJob`` task looks the job's kind up here)."""

from __future__ import annotations

from hub.domain.imports import run_import
from hub.domain.jobs import Runner
from hub.domain.reindex import run_reindex
from hub.domain.vector_models import REINDEX
from hub.domain.sync import run_sync

RUNNERS: dict[str, Runner] = {"sync": run_sync, "import": run_import, REINDEX: run_reindex}
