"""The failed records of a progress, to list and to mark IGNORE or RETRY between runs.

:class:`FailedRecords` is what ``ferryman failed list|ignore|retry`` does, usable from Python::

    failed = FailedRecords("progress.db")
    for row in failed.list(migration="order_lines", grep="negative quantity"):
        print(row.record.id, row.cause)
    failed.mark("IGNORE", grep="negative quantity")

It works on an SQLite ledger or an mjg JSON file named by a path (opened for each call: read-only
to list; to mark, only while no live run holds it, and saved at once), or on a
:class:`~.ledger.Ledger` in hand, used as it is: no lease is taken, and a ledger that keeps its
progress in memory (mjg JSON) saves the marks when it next saves.
"""

from __future__ import annotations

import builtins
import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, cause_summary
from ..ids import format_id, near_miss
from ..types import RecordId
from .files import changing, reading
from .ledger import Ledger
from .model import Action, FailedRecord
from .reader import select_migrations


@dataclass
class FailedRow:
    """One failed record, with the migration it failed in."""

    identity: str
    name: str
    record: FailedRecord

    @property
    def cause(self) -> str:
        """The most telling line of the stored cause (:func:`~ferryman.errors.cause_summary`)."""
        return cause_summary(self.record.cause)

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration": self.name, "identity": self.identity, "id": self.record.id,
            "action": self.record.action.value, "description": self.record.description,
            "cause": self.cause, "full_cause": self.record.cause, "timestamp": self.record.timestamp.isoformat(),
        }


class FailedRecords:
    """The failed records of the progress at a path (SQLite ledger or mjg JSON), or of a ledger.

    ``migration`` (a name or an identity) chooses one migration; ``grep`` is text looked for,
    in any case, in the description and the cause.
    """

    def __init__(self, progress: str | os.PathLike[str] | Ledger) -> None:
        self.progress = progress
        self.where = getattr(progress, "path", None) or (
            type(progress).__name__ if isinstance(progress, Ledger) else os.fspath(progress))
        """How messages name the progress."""

    def list(self, *, migration: str | None = None, grep: str | None = None) -> builtins.list[FailedRow]:
        """The failed records, by migration, the first failure first."""
        with self._open(None) as ledger:
            return self._rows(ledger, migration, grep)

    def mark(
        self,
        action: Action | str,
        *,
        ids: Sequence[RecordId] = (),
        all: bool = False,
        grep: str | None = None,
        migration: str | None = None,
    ) -> dict[str, int]:
        """Set the action of failed records; how many changed, by migration name.

        Exactly one of ``ids``, ``all`` and ``grep`` chooses the records. An id that is not a
        failed record, or that failed in several migrations while ``migration`` is not given,
        is an error and nothing is changed. Refused while a live run holds the progress.
        """
        action = Action(action)
        if sum((bool(ids), all, grep is not None)) != 1:
            raise InputError("choose the records with IDs, --all or --grep TEXT (exactly one of them)")
        with self._open(f"change failed records in {self.where}") as ledger:
            rows = self._rows(ledger, migration, grep)
            chosen = self._by_id(rows, ids, migration) if ids else _by_migration(rows)
            names = ledger.names()
            return {names.get(identity, identity): ledger.set_action(identity, chosen_ids, action)
                    for identity, chosen_ids in chosen.items()}

    @contextmanager
    def _open(self, doing: str | None) -> Iterator[Ledger]:
        """The ledger: as it is when one was given; else the file, to read or (``doing``) to change."""
        if isinstance(self.progress, Ledger):
            yield self.progress
        elif doing is None:
            with reading(self.progress) as ledger:
                yield ledger
        else:
            with changing(self.progress, doing) as ledger:
                yield ledger

    def _rows(self, ledger: Ledger, migration: str | None, grep: str | None) -> builtins.list[FailedRow]:
        if grep == "":
            raise InputError("--grep needs some text to look for (an empty one would choose every record)")
        names = ledger.names()
        needle = grep.casefold() if grep else None
        rows = []
        for identity in self._select(ledger, names, migration):
            for record in ledger.failed_records(identity):
                if needle and needle not in record.description.casefold() and needle not in record.cause.casefold():
                    continue
                rows.append(FailedRow(identity, names.get(identity, identity), record))
        return rows

    def _select(self, ledger: Ledger, names: dict[str, str], migration: str | None) -> builtins.list[str]:
        return select_migrations({i: names.get(i, i) for i in ledger.identities()}, migration, self.where)

    def _by_id(self, rows: builtins.list[FailedRow], ids: Sequence[RecordId],
               migration: str | None) -> dict[str, builtins.list[RecordId]]:
        by_id: dict[RecordId, builtins.list[FailedRow]] = {}
        for row in rows:
            by_id.setdefault(row.record.id, []).append(row)
        missing = [i for i in ids if i not in by_id]
        if missing:
            where = f" of migration {migration}" if migration else ""
            near = next(((i, k) for i in missing if (k := near_miss(i, by_id)) is not None), None)
            hint = "" if near is None else (
                f"; did you mean {shlex.quote(format_id(near[1]))}? An id with whitespace at an end is shown, "
                f"and typed, as a JSON string")
            raise InputError(f"not a failed record{where} in {self.where}: "
                             f"{', '.join(map(format_id, missing))} (see `ferryman failed list`{hint})")
        ambiguous = [i for i in ids if len(by_id[i]) > 1]
        if ambiguous:
            where = ", ".join(r.name for r in by_id[ambiguous[0]])
            raise InputError(f"id {format_id(ambiguous[0])} failed in several migrations ({where}); "
                             "choose one with --migration NAME")
        chosen: dict[str, builtins.list[RecordId]] = {}
        for record_id in dict.fromkeys(ids):
            chosen.setdefault(by_id[record_id][0].identity, []).append(record_id)
        return chosen


def _by_migration(rows: builtins.list[FailedRow]) -> dict[str, builtins.list[RecordId]]:
    chosen: dict[str, builtins.list[RecordId]] = {}
    for row in rows:
        chosen.setdefault(row.identity, []).append(row.record.id)
    return chosen
