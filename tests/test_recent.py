"""The query path's caches (``hub.domain.recent``): a change to a watched row empties them when it is flushed and
again when it is committed, and a value read while a change was under way is never kept."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy
from sqlalchemy.orm import Session

from hub.db.models import ApiKey, Base, Shop
from hub.domain.recent import Recent, track_changes


def test_a_change_empties_the_cache_at_its_flush_and_again_at_its_commit(tmp_path: Path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'recent.db'}")
    Base.metadata.create_all(engine)
    track_changes()
    shops, keys = Recent[str, str](60, (Shop,)), Recent[str, str](60, (ApiKey,))
    with Session(engine) as session:
        shop = Shop(name="A", email="a@example.com")
        session.add(shop)
        session.commit()
        shops.put("a", "before", shops.generation)
        keys.put("k", "unrelated", keys.generation)
        shop.name = "B"
        session.flush()
        assert shops.get("a") is None and keys.get("k") == "unrelated"  # only the caches that watch shops
        # a reader between the flush and the commit reads the old row (another connection): it is kept for now…
        shops.put("a", "read before the commit", shops.generation)
        assert shops.get("a") == "read before the commit"
        session.commit()
        assert shops.get("a") is None  # …and dropped when the change is committed
    engine.dispose()


def test_a_value_read_before_the_cache_was_emptied_is_not_kept():
    cache = Recent[str, str](60, ())
    noted = cache.generation  # a reader starts reading the database
    cache.clear()  # a change meanwhile
    cache.put("k", "stale", noted)
    assert cache.get("k") is None
    cache.put("k", "fresh", cache.generation)
    assert cache.get("k") == "fresh"


def test_replace_never_puts_back_what_was_emptied_or_replaced():
    cache = Recent[str, str](60, ())
    cache.put("k", "first", cache.generation)
    first = cache.get("k")
    assert first is not None
    cache.clear()
    cache.replace("k", first, "touched")
    assert cache.get("k") is None
    cache.put("k", "second", cache.generation)
    cache.replace("k", first, "touched")  # not what is kept any more
    assert cache.get("k") == "second"


def test_nothing_is_kept_with_no_time_and_nothing_is_trusted_past_it():
    off = Recent[str, str](0, ())
    off.put("k", "v", off.generation)
    assert off.get("k") is None
    now = [0.0]
    cache = Recent[str, str](5, ())
    cache.clock = lambda: now[0]
    cache.put("k", "v", cache.generation)
    now[0] = 5.0
    assert cache.get("k") == "v"
    now[0] = 5.01
    assert cache.get("k") is None


async def test_read_loads_once_keeps_nothing_found_and_drops_what_a_change_overtook():
    cache = Recent[str, str](60, ())
    loads: list[str] = []

    async def load(value: str | None, clear: bool = False) -> str | None:
        loads.append(str(value))
        if clear:
            cache.clear()  # a change while this was read
        return value

    assert await cache.read("a", lambda: load("first")) == "first"
    assert await cache.read("a", lambda: load("second")) == "first" and loads == ["first"]  # kept
    assert await cache.read("b", lambda: load(None)) is None
    assert await cache.read("b", lambda: load("found")) == "found" and loads == ["first", "None", "found"]
    assert await cache.read("c", lambda: load("stale", clear=True)) == "stale"  # answered, not kept
    assert await cache.read("c", lambda: load("fresh")) == "fresh" and loads[-2:] == ["stale", "fresh"]
