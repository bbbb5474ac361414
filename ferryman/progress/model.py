"""The progress ledger in memory: per migration, which records succeeded and which failed.

It mirrors Java mjg's ``MigrationProgress`` field for field, so that a progress file written by
either tool is read by the other (the JSON side is :mod:`ferryman.progress.jsonfmt`). Ids keep
their exact type (``int``, ``str``, ``tuple``): that is what lets a later run skip the records
that already succeeded, where mjg lost ``Long`` ids after a reload.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import TypeGuard

from ..ids import format_id
from ..redact import mask_secrets
from ..types import RecordId


class Action(str, Enum):
    """What the next run does with a failed record; a ``str`` so it is written as-is to JSON."""

    RETRY = "RETRY"
    IGNORE = "IGNORE"


def check_id(value: object) -> RecordId:
    """Return ``value`` if it is a record id, else raise ``TypeError``.

    Only ints, strs and non-empty flat tuples of those survive the JSON round trip unchanged.
    Rejecting anything else when it enters the ledger, not when it is saved, keeps one bad id
    from making the whole progress unsavable (mjg silently stopped saving in that case).
    """
    if is_key_part(value):
        return value
    if isinstance(value, tuple) and value and all(is_key_part(part) for part in value):
        return value
    raise TypeError(
        f"invalid record id {value!r}: expected an int, a str or a non-empty tuple of those "
        "(ferryman.ids.normalize_id converts native key values)"
    )


def is_key_part(value: object) -> TypeGuard[int | str]:
    """Whether ``value`` can be an id or one field of a composite id (``bool`` cannot)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def display_name(identity: str) -> str:
    """A migration's name when only its key is known: the class name of its identity
    (``module.Class``), and, for the key of a second destination (``module.Class@dataset``),
    that destination."""
    return keyed_name(identity.partition("@")[0].rsplit(".", 1)[-1], identity)


def keyed_name(name: str, key: str) -> str:
    """A migration's ``name`` as shown for the progress kept under ``key``: with ``@dataset``
    when the key is a second destination's, so that one class run into two destinations is
    two migrations that every command tells apart (and ``--migration`` chooses between)."""
    dest = key.partition("@")[2]
    return f"{name}@{dest}" if dest and not name.endswith(f"@{dest}") else name


@dataclass
class FailedRecord:
    """One record that failed, as reported to the user and re-run (or not) next time."""

    id: RecordId
    description: str = ""
    cause: str = ""
    action: Action = Action.RETRY
    timestamp: datetime = field(default_factory=datetime.now)
    """Naive local time, like Java's ``LocalDateTime``."""

    def __post_init__(self) -> None:
        check_id(self.id)
        self.action = Action(self.action)

    def mentions(self, needle: str) -> bool:
        """Whether ``needle`` (casefolded) is in the id as the command line shows it, the
        description or the cause, in any case: what a search for failed records looks at."""
        return any(needle in text.casefold() for text in (format_id(self.id), self.description, self.cause))


@dataclass(repr=False)
class MigrationEntry:
    """The records of one migration. Invariant: an id is never both succeeded and failed.

    ``succeeded`` is an insertion-ordered set (values are ``None``); ``failed`` is keyed by id.
    """

    fqcn: str
    succeeded: dict[RecordId, None] = field(default_factory=dict)
    failed: dict[RecordId, FailedRecord] = field(default_factory=dict)

    def mark_succeeded(self, ids: Iterable[RecordId]) -> None:
        """Record ids as migrated and drop any failure recorded for them earlier."""
        succeeded, failed = self.succeeded, self.failed
        for record_id in ids:
            succeeded[check_id(record_id)] = None
            if failed:
                failed.pop(record_id, None)

    def mark_failed(self, records: Iterable[FailedRecord]) -> None:
        """Insert or replace failures (keeping an existing entry's position); ids leave ``succeeded``."""
        for record in records:
            self.succeeded.pop(record.id, None)
            self.failed[record.id] = record

    def ids_with_action(self, action: Action | str) -> list[RecordId]:
        """Ids of the failed records whose action is ``action``, in insertion order."""
        action = Action(action)
        return [record.id for record in self.failed.values() if record.action is action]

    def copy(self) -> MigrationEntry:
        return MigrationEntry(
            self.fqcn,
            dict(self.succeeded),
            {record_id: replace(record) for record_id, record in self.failed.items()},
        )

    def __repr__(self) -> str:
        # The default repr would print every id, which can be millions.
        return (
            f"MigrationEntry({self.fqcn!r}, succeeded={len(self.succeeded)}, "
            f"failed={len(self.failed)})"
        )


@dataclass
class ProgressMetadata:
    """Run-level facts; ``completed`` and ``in_progress`` hold migration identities, no repeats.

    ``timestamp`` is never updated by a run (as in mjg); it names backup files.
    """

    timestamp: datetime = field(default_factory=datetime.now)
    completed: list[str] = field(default_factory=list)
    in_progress: list[str] = field(default_factory=list)


class MigrationProgress:
    """The whole ledger: metadata, one :class:`MigrationEntry` per migration, fatal errors.

    Not thread-safe: a reader in another thread should work on :meth:`copy`, taken by the writer.
    """

    def __init__(
        self,
        metadata: ProgressMetadata | None = None,
        migrations: dict[str, MigrationEntry] | None = None,
        fatal_errors: list[str] | None = None,
    ) -> None:
        self.metadata = ProgressMetadata() if metadata is None else metadata
        self.migrations: dict[str, MigrationEntry] = {} if migrations is None else migrations
        self.fatal_errors: list[str] = [] if fatal_errors is None else fatal_errors

    # --- run bookkeeping -----------------------------------------------------------------

    def entry(self, identity: str) -> MigrationEntry:
        """The entry of a migration, created empty on first use."""
        found = self.migrations.get(identity)
        if found is None:
            found = self.migrations[identity] = MigrationEntry(identity)
        return found

    def start_migration(self, identity: str) -> None:
        _remove(self.metadata.completed, identity)
        _append_new(self.metadata.in_progress, identity)

    def finish_migration(self, identity: str) -> None:
        _remove(self.metadata.in_progress, identity)
        _append_new(self.metadata.completed, identity)

    def forget(self, identity: str) -> None:
        """Drop everything about one migration (its fatal errors are run-level, so they stay)."""
        self.migrations.pop(identity, None)
        _remove(self.metadata.in_progress, identity)
        _remove(self.metadata.completed, identity)

    def record_fatal(self, text: str) -> None:
        """Keep a fatal error (a traceback, secrets masked); like mjg, these are never cleared by a run."""
        self.fatal_errors.append(mask_secrets(text))

    # --- failed records ----------------------------------------------------------------

    def failed_records(self, migration: str | None = None) -> list[tuple[str, FailedRecord]]:
        """``(identity, record)`` for every failed record, or only those of one migration."""
        if migration is not None:
            entry = self.migrations.get(migration)
            return [] if entry is None else [(migration, r) for r in entry.failed.values()]
        return [
            (identity, record)
            for identity, entry in self.migrations.items()
            for record in entry.failed.values()
        ]

    def set_action(self, identity: str, ids: Iterable[RecordId], action: Action | str) -> int:
        """Set the action of some failed records; returns how many changed (unknown ids are skipped)."""
        action = Action(action)
        entry = self.migrations.get(identity)
        if entry is None:
            return 0
        changed = 0
        for record_id in ids:
            record = entry.failed.get(record_id)
            if record is not None and record.action is not action:
                record.action = action
                changed += 1
        return changed

    def summary(self) -> dict[str, dict[str, int]]:
        """Per migration: ``succeeded``, ``failed`` (action RETRY) and ``ignored`` (IGNORE) counts."""
        result: dict[str, dict[str, int]] = {}
        for identity, entry in self.migrations.items():
            ignored = sum(1 for r in entry.failed.values() if r.action is Action.IGNORE)
            result[identity] = {
                "succeeded": len(entry.succeeded),
                "failed": len(entry.failed) - ignored,
                "ignored": ignored,
            }
        return result

    # --- persistence -------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> MigrationProgress:
        """Parse mjg progress JSON; raises ``ProgressFormatError`` (``source`` names the file)."""
        from .jsonfmt import loads

        return loads(text, source)

    def to_json(self) -> str:
        """The text Java mjg's ``ObjectMapperFactory.get()`` would write, byte for byte."""
        from .jsonfmt import dumps

        return dumps(self)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MigrationProgress:
        """Read a progress file; a missing file raises ``FileNotFoundError``."""
        from .storage import read_text

        return cls.from_json(read_text(path), source=os.fspath(path))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: the file holds either the old or the new progress, never a mix."""
        from .storage import save_text_atomically

        save_text_atomically(path, self.to_json())

    # --- value semantics ---------------------------------------------------------------

    def copy(self) -> MigrationProgress:
        """A copy that shares no mutable state with this one (ids are immutable)."""
        metadata = self.metadata
        return MigrationProgress(
            ProgressMetadata(metadata.timestamp, list(metadata.completed), list(metadata.in_progress)),
            {identity: entry.copy() for identity, entry in self.migrations.items()},
            list(self.fatal_errors),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MigrationProgress):
            return NotImplemented
        return (
            self.metadata == other.metadata
            and self.migrations == other.migrations
            and self.fatal_errors == other.fatal_errors
        )

    def __repr__(self) -> str:
        failed = sum(len(entry.failed) for entry in self.migrations.values())
        return (
            f"MigrationProgress(migrations={len(self.migrations)}, failed={failed}, "
            f"fatal_errors={len(self.fatal_errors)})"
        )


def _remove(items: list[str], value: str) -> None:
    if value in items:
        items.remove(value)


def _append_new(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)
