"""Typed names of what handlers get injected (Litestar's explicit dependency markers)."""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

Db = NamedDependency[AsyncSession]
