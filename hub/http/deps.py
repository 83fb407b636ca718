"""Typed names of what handlers get injected (Litestar's explicit dependency markers)."""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from hub.domain.services import Services

Db = NamedDependency[AsyncSession]
Svc = NamedDependency[Services]  # the process's one Services (hub.bootstrap)
