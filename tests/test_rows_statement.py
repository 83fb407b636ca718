"""A ranking's image rows come from one statement per shape of the filters (``hub.domain.ranking._rows_statement``),
its values passed as parameters: the parameters are typed by their columns, not by the first query's values, and
the shape tells ``available`` apart exactly as the statement's conditions do."""

from __future__ import annotations

from sqlalchemy.dialects import postgresql

from hub.domain.ranking import _rows_statement


def sql(stmt) -> str:
    return str(stmt.compile(dialect=postgresql.asyncpg.dialect())).split("WHERE", 1)[1]


def test_one_statement_per_shape_its_parameters_typed_by_their_columns():
    first, values = _rows_statement(7, {"price_max": 10}, ())
    again, later = _rows_statement(8, {"price_max": 9.5}, ())
    assert again is first and values == {"shop_id": 7, "price_max": 10} and later == {"shop_id": 8, "price_max": 9.5}
    assert "products.price <= $4::NUMERIC(12, 2)" in sql(first)  # (typed by the first value: ::INTEGER, and 9.5 refused)
    excluding, values = _rows_statement(7, {"price_max": 9.5}, (3, 4))
    assert excluding is not first and values["exclude"] == [3, 4] and "NOT IN" in sql(excluding)


def test_available_is_told_apart_as_the_statement_does():
    in_stock, _ = _rows_statement(7, {"available": True}, ())
    out_of_stock, _ = _rows_statement(7, {"available": False}, ())
    either, _ = _rows_statement(7, {}, ())
    assert "products.available IS true" in sql(in_stock) and "products.available IS false" in sql(out_of_stock)
    assert "available" not in sql(either)
    assert _rows_statement(7, {"available": 1}, ())[0] is either  # (not a boolean: no condition, as matching())
