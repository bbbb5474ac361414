"""What a reflected table says about uniqueness, besides the key a store identifies records by."""

from __future__ import annotations

from sqlalchemy import Table, UniqueConstraint


def unique_keys(table: Table, key: tuple[str, ...]) -> list[tuple[str | None, tuple[str, ...]]]:
    """The table's unique constraints and unique indexes but ``key``: (name or None, columns),
    each column set once (a database may report one as both)."""
    named = [(c.name, c.columns) for c in table.constraints if isinstance(c, UniqueConstraint)]
    named += [(i.name, i.columns) for i in table.indexes if i.unique]
    found: dict[tuple[str, ...], str | None] = {}
    for name, columns in named:
        fields = tuple(c.name for c in columns)
        if fields and set(fields) != set(key):
            found.setdefault(fields, None if name is None else str(name))
    return [(name, fields) for fields, name in found.items()]
