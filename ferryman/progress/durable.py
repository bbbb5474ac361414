"""What a durable ledger does the same whatever database keeps it: journal entries and their
recovery, the queue of pages committed at checkpoints, the run's outcome, the keys a second
destination gets. :class:`DurableLedger` holds that logic; the SQLite ledger
(:mod:`ferryman.progress.sqlite`) and the PostgreSQL ledger (:mod:`ferryman.progress.postgres`)
each supply the statements (``_commit``, ``_fold_journal``, ``_has_progress``, ``_dest_of``,
``_set_dest``) and the lease.
"""

from __future__ import annotations

import json
import logging
import time
from abc import abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ..errors import LeaseLostError, LedgerMismatchError, StoreError
from ..redact import mask_secrets
from ..report import MigrationReport, RunResult
from ..report import last_error as run_last_error
from ..signals import critical
from ..stores.base import JournalEntry, Store
from ..types import RecordId
from .codec import as_id, encode_id, encode_ids
from .lease import HeartbeatLease
from .ledger import Ledger, marked_event, new_event
from .model import Action, MigrationProgress

log = logging.getLogger("ferryman")

FLUSH_INTERVAL = 0.5
"""Seconds between ledger commits when the destination journals its batches."""
JOURNAL_CLEANUP_EVERY = 32
"""Ledger commits between two deletions of journal rows the ledger already holds."""
JOURNALED_KEPT = 64
"""Journal payloads kept for ``record`` to reuse (a page has a few batches)."""

Op = tuple[str, int, Any]
"""A page queued for the next commit: ``("s", migration row id, successes)`` or
``("f", migration row id, failed rows)``."""


class DurableLedger(Ledger):
    """The logic both durable ledgers share (see the module docstring)."""

    journals = True
    path: str
    uid: str
    journal_owner: str
    read_only: bool
    conn: Any
    run_id: int | None
    lease: HeartbeatLease[Any] | None
    lost_lease: str | None
    lease_errors: tuple[type[Exception], ...] = ()
    """What giving the lease back may raise (the database's errors): said, not raised."""

    def _init_queue(self) -> None:
        """The state of a ledger open for a run (called by the subclass's ``__init__``)."""
        self._ops: list[Op] = []
        self._maybe_done: set[int] = set()
        """Migrations whose earlier runs left succeeded ids (a fresh one needs no lookups)."""
        self._has_failed: set[int] = set()
        """Migrations that may have failed entries (only their successes delete failed rows)."""
        self._ignored: dict[int, set[RecordId]] = {}
        self._dests: dict[str, Store] = {}
        self._last_flush = time.monotonic()
        self._flushes = 0
        self._changed: set[int] = set()
        """Migrations whose write count this run already raised (once a run each)."""
        self._journaled: list[tuple[str, Sequence[RecordId], str]] = []
        """Recent journal payloads (identity, ids, text): record() reuses them, not re-encodes."""
        self._reports: Sequence[MigrationReport] = ()

    # --- what each database does in its own SQL ----------------------------------------------

    @abstractmethod
    def _mid(self, identity: str) -> int:
        """The migration's row id, made on first use."""

    @abstractmethod
    def _tx(self) -> AbstractContextManager[None]:
        """One write transaction, which first checks the run still holds its lease."""

    @abstractmethod
    def _new_lease(self) -> HeartbeatLease[Any]:
        """A lease for a run on this ledger; LedgerBusyError while a live run holds it."""

    @abstractmethod
    def _record_run_start(self, lease: Any) -> int:
        """In a write transaction: take ``lease``, end as died the runs its dead holder left
        unfinished, record a new run (:func:`next_run`); its id."""

    @abstractmethod
    def _record_run_end(self, outcome: str, last_error: str | None, reports: str) -> None:
        """In a write transaction: how :attr:`run_id` ended."""

    @abstractmethod
    def _delete_progress(self, mid: int, key: str) -> None:
        """In a write transaction: the migration's succeeded ids, failed records, fatal errors
        and report deleted, and its row marked neither in progress nor completed."""

    def _forgot(self, mid: int, key: str) -> None:
        """What else the ledger keeps of a migration it forgot, forgotten (nothing here)."""

    @abstractmethod
    def refuse_if_live(self, doing: str | None = None) -> None:
        """Raise LedgerBusyError while a live run holds the lease (the reader's)."""

    @abstractmethod
    def _set_actions(self, mid: int, ids: Iterable[RecordId] | None, action: Action) -> int:
        """In a write transaction: ``action`` for the migration's failed records with these ids
        (all of them when None); how many changed."""

    @abstractmethod
    def record_encoded(self, identity: str, text: str) -> None:
        """Queue successes given as the JSON array of their ids (another ledger's log: no
        decoding and encoding again)."""

    @abstractmethod
    def _fold(self, mid: int) -> int:
        """In a write transaction: the migration's log of successes moved into the per-id
        table; how many ids."""

    def index_succeeded(self, identity: str) -> None:
        """Fold the successes logged since the migration started into the per-id table, which
        lookups read: for those made by other processes (partitions' workers) reading this
        ledger, after successes were merged into it."""
        mid = self._mid(identity)
        self._flush()
        with self._tx():
            if self._fold(mid):
                self._maybe_done.add(mid)

    @abstractmethod
    def _insert_event(self, body: str) -> int:
        """An event row (its JSON ``body``); its sequence number."""

    @abstractmethod
    def _insert_verification(self, ok: bool, body: str) -> None:
        """A verification's row (its JSON ``body``)."""

    @abstractmethod
    def _commit(self, ops: list[Op]) -> None:
        """The queued pages and failures, the write counts and the reports, in one transaction."""

    @abstractmethod
    def _fold_journal(self, mid: int, keys: list[str]) -> int:
        """Record these encoded ids succeeded (their failed entries deleted), in a transaction;
        how many were not recorded before."""

    @abstractmethod
    def _has_progress(self, key: str) -> bool:
        """Whether the ledger holds any succeeded or failed id of the migration."""

    @abstractmethod
    def replacing(self) -> AbstractContextManager[Any]:
        """Replace the whole content in one transaction (refused while a run holds the lease):
        the importer it yields takes the new content in pieces."""

    @abstractmethod
    def _dest_of(self, key: str) -> str | None:
        """The destination dataset the migration ``key`` is bound to."""

    @abstractmethod
    def _set_dest(self, key: str, dest: str) -> None:
        """Bind the migration ``key`` to ``dest`` (made when missing)."""

    # --- what the ledger holds -----------------------------------------------------------------

    def ignored_among(self, identity: str, ids: Sequence[RecordId]) -> set[RecordId]:
        """From the migration's IGNORE marks read when it started (a run changes none)."""
        ignored = self._ignored.get(self._mid(identity))
        return {i for i in ids if i in ignored} if ignored else set()

    def import_progress(self, progress: MigrationProgress) -> None:
        """Replace this ledger's content with ``progress``."""
        with self.replacing() as load:
            load.metadata(progress.metadata)
            for identity, entry in progress.migrations.items():
                load.succeeded(identity, entry.succeeded)
                load.failed(identity, entry.failed.values())
            load.fatal_errors(progress.fatal_errors)

    def forget(self, key: str, dest: Store | None = None, *, every_ledger: bool = False) -> None:
        """Forget everything about a migration's progress (refused while a live run holds the
        ledger; a run resets its own); its destination journal's entries too, so none is folded
        back later. Another ledger's entries are its mark, which keeps a run on a ledger that
        knows nothing of the migration from writing it all again: they go only with
        ``every_ledger``."""
        mid = self._mid(key)
        self._flush()
        name = self.names().get(key, key)
        with self._tx():
            if self.lease is None:
                self.refuse_if_live("reset a migration")
            self._delete_progress(mid, key)
            self._append_event(new_event("migration.reset", migration=name, identity=key))
        for cache in (self._maybe_done, self._has_failed):
            cache.discard(mid)
        self._ignored.pop(mid, None)
        self._forgot(mid, key)
        self._forget_journal(key, dest, every_ledger)

    def set_action(self, identity: str, ids: Iterable[RecordId] | None, action: Action) -> int:
        """Set the action of failed records (all of the migration's when ``ids`` is None); the
        event log says so, in the same transaction."""
        mid = self._mid(identity)
        name = self.names().get(identity, identity)
        with self._tx():
            changed = self._set_actions(mid, ids, action)
            if changed:
                self._append_event(marked_event(name, action, changed))
            return changed

    def close(self) -> None:
        """Write what is pending (unless the lease or the connection was lost), release the
        lease, close."""
        try:
            if not self._cut_off():
                self._flush()
        finally:
            try:
                self._release()
            finally:
                self.conn.close()

    # --- the event log and verifications -------------------------------------------------------

    def record_event(self, event: dict[str, Any]) -> int | None:
        """Append an event, in a transaction of its own; nothing once the run lost its lease
        (the ledger is the new holder's)."""
        if self.read_only or self._cut_off():
            return None
        with self._tx():
            return self._append_event(event)

    def _append_event(self, event: dict[str, Any]) -> int:
        """:meth:`record_event` in the caller's transaction."""
        return self._insert_event(json.dumps({k: v for k, v in event.items() if k != "seq"}, default=str))

    def record_verification(self, result: dict[str, Any]) -> None:
        if self.read_only or self._cut_off():
            return
        with self._tx():
            self._insert_verification(bool(result.get("ok")), json.dumps(result, default=str))

    # --- runs and the lease ------------------------------------------------------------------

    def begin_run(self, reports: Sequence[MigrationReport]) -> None:
        """Take the lease (or raise LedgerBusyError) and record a new run."""
        lease = self._new_lease()
        with self._tx():
            self.run_id = self._record_run_start(lease)
        self.lease, self.lost_lease = lease, None
        self._reports = reports
        self._changed.clear()
        lease.start_heartbeat()

    def end_run(self, result: RunResult) -> None:
        """Record how the run ended and release the lease. A run that lost the lease writes
        nothing (its outcome must not land over the new holder's) and raises LeaseLostError; a
        ledger that cannot be written releases the lease all the same (the next run then finds
        the outcome missing and says so)."""
        try:
            self._flush()
            if self.run_id is not None:
                outcome, last_error = run_outcome(result)
                with self._tx():
                    self._record_run_end(outcome, last_error, reports_json(result.reports))
        finally:
            self._release()

    def _release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            self.lost_lease = lease.lost
            if self._connection_lost():  # said when the write failed: the lease goes stale
                lease.stop_heartbeat()
                return
            try:
                lease.release(self.conn)
            except self.lease_errors as exc:  # the heartbeat has stopped: the lease goes stale
                log.warning("could not release the lease of %s: %s", self.path, exc)

    def _lost(self) -> bool:
        """Whether this ledger's run lost its lease, now or before it ended."""
        return self.lost_lease is not None or (self.lease is not None and self.lease.lost is not None)

    def _connection_lost(self) -> bool:
        """Whether the ledger's connection is gone for good (a server that ended the session):
        nothing can be written on it any more, and the write that met it said so."""
        return False

    def _cut_off(self) -> bool:
        """Whether nothing more may (a lost lease) or can (a lost connection) be written."""
        return self._lost() or self._connection_lost()

    # --- journal entries ---------------------------------------------------------------------

    def journal_key(self, identity: str) -> str:
        return f"{self.journal_owner}:{identity}"

    def journal_for(self, identity: str, ids: Sequence[RecordId]) -> JournalEntry | None:
        """The batch's input ids as a JSON array (ids keep their JSON types), fenced by the held
        lease's epoch: once a run that took the lease over raised the migration's fence, the
        destination refuses the batch (no lease held: no fence)."""
        text = encode_ids(ids)
        if len(self._journaled) >= JOURNALED_KEPT:
            del self._journaled[:JOURNALED_KEPT // 2]
        self._journaled.append((identity, list(ids), text))  # a copy: the caller may reuse its list
        fence = None if self.lease is None else self.lease.epoch
        return JournalEntry(self.journal_key(identity), text, fence=fence)

    def _journaled_text(self, identity: str, ids: Sequence[RecordId]) -> str | None:
        """The JSON array of ``ids`` joined from the journal entries of their batches, if the
        page's successes are exactly those batches in order (the usual case): no second
        encoding. None otherwise; the caller encodes then."""
        if not self._journaled:
            return None
        if not isinstance(ids, list):
            ids = list(ids)
        parts: list[str] = []
        pos, total = 0, len(ids)
        for owner, batch, text in self._journaled:
            end = pos + len(batch)
            if owner == identity and end <= total and ids[pos:end] == batch:
                parts.append(text[1:-1])
                pos = end
                if pos == total:
                    return "[" + ",".join(parts) + "]"
        return None

    def recover(self, identity: str, dest: Store) -> int:
        """Fold the journal's entries into the ledger, so lookups see them.

        A run holding the lease first raises the migration's fence in the destination to its
        epoch: a run whose lease it took over (paused, say, with a batch on its way) can commit
        nothing more, and what it did commit is in the journal read next. The journal repeats
        ids the ledger may hold already (it is cleaned only now and then): each is kept once.
        """
        if not dest.supports_journal:
            return 0
        self._dests[identity] = dest
        key = self.journal_key(identity)
        if self.lease is not None:
            dest.raise_fence(key, self.lease.epoch)
        entries = dest.read_journal(key)
        if not entries:
            return 0
        keys = [encode_id(as_id(v)) for e in entries for v in json.loads(e.payload)]
        mid = self._mid(identity)
        self._flush()
        self._fold_journal(mid, keys)
        self._maybe_done.add(mid)
        self._delete_journal(dest, key)
        return len(keys)

    def _clean_journal(self, identity: str) -> None:
        """Drop journal rows the ledger now holds; if the store is down, try again later
        (the rows stay correct to fold back, only the journal grows meanwhile)."""
        dest = self._dests.get(identity)
        if dest is not None:
            try:
                self._delete_journal(dest, self.journal_key(identity))
            except StoreError as exc:
                log.warning("could not clean the journal of %s yet: %s", dest.name, exc)

    def _delete_journal(self, dest: Store, key: str) -> None:
        """Delete journal rows the ledger holds, all but the newest: it stays as this ledger's
        mark on the destination (see :meth:`check_destination`; folding it back again changes
        nothing). Never after the lease was lost: the run that took it over writes its own
        batches' rows under the same key and needs them."""
        self.assert_held()
        dest.delete_journal(key, keep_last=True)

    def check_destination(self, key: str, dest: Store) -> None:
        """Refuse a migration this ledger knows nothing of whose destination holds another
        ledger's mark for it: what that ledger recorded as done would be written again."""
        if not dest.supports_journal or self._has_progress(key):
            return
        try:
            entries = dest.read_journal()
        except StoreError:
            return  # the migration's own journal recovery retries it, and fails it if it must
        others = {ledger_of(e.migration) for e in entries if e.migration.partition(":")[2] == key} - {self.uid}
        if others:
            name = key.rsplit(".", 1)[-1]
            raise LedgerMismatchError(
                f"destination {dest.name!r} holds what migration {name} wrote under another progress "
                f"ledger (id {sorted(others)[0][:12]}), and progress ledger {self.path} has no progress "
                f"for it: this run would write it all again. Run with that ledger's --progress (by "
                f"default ferryman-progress.db in the current directory)")

    def _forget_journal(self, key: str, dest: Store | None, every_ledger: bool) -> None:
        """Delete this ledger's journal entries for migration ``key`` in ``dest`` (its
        partitions' too), and with ``every_ledger`` every other ledger's."""
        if dest is not None and dest.supports_journal:
            self.assert_held()
            keys = {e.migration for e in dest.read_journal() if e.migration.partition(":")[2] == key
                    and (every_ledger or ledger_of(e.migration) == self.uid)}
            for entry_key in keys | {self.journal_key(key)}:
                dest.delete_journal(entry_key)

    # --- the queue of pages ------------------------------------------------------------------

    def checkpoint(self, urgent: bool = True) -> None:
        if urgent or time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self._flush()

    def _flush(self) -> None:
        """Commit everything recorded so far in one transaction."""
        if self.read_only:
            return
        ops = self._ops
        self._last_flush = time.monotonic()
        if not ops and self.lease is None:
            return  # no run holds the ledger: no run row nor reports to bring up to date
        # The pages stay queued until their commit succeeded (a full disk keeps them for the
        # next try); a second Ctrl-C waits for the commit and its bookkeeping, so they are
        # neither forgotten nor written twice.
        with critical():
            try:
                self._commit(ops)
            except LeaseLostError:
                self._ops = []  # never this run's to write: the run that took over folds their journal
                raise
            self._ops = []
        if ops:
            if log.isEnabledFor(logging.INFO):
                pages = sum(kind == "s" for kind, _, _ in ops)
                failed = sum(len(rows) for kind, _, rows in ops if kind == "f")
                log.info("checkpoint: %d page(s) of migrated records and %d failed record(s) committed to %s",
                         pages, failed, self.path)
            self._flushes += 1
            if self._flushes % JOURNAL_CLEANUP_EVERY == 0:
                for identity in list(self._dests):
                    self._clean_journal(identity)

    # --- lineage ------------------------------------------------------------------------------

    def bind(self, identity: str, dest: str) -> str:
        """The key a migration's progress is kept under (see :meth:`Ledger.bind`)."""
        key = self.key_of(identity, dest)
        if self._dest_of(key) != dest:
            self._set_dest(key, dest)
        return key

    def key_of(self, identity: str, dest: str) -> str:
        current = self._dest_of(identity)
        return identity if current in (None, dest) else derived_key(identity, dest)


def ledger_of(journal_key: str) -> str:
    """The uid of the ledger that wrote a journal entry under ``journal_key`` (its partitions'
    entries included)."""
    return journal_key.partition(":")[0].partition("/")[0]


def derived_key(identity: str, dest: str) -> str:
    """The key of a migration class's progress for a second destination: ``identity@dest``."""
    return f"{identity}@{dest}"


def reports_json(reports: Sequence[MigrationReport]) -> str:
    return json.dumps([r.to_dict() for r in reports])


def run_outcome(result: RunResult) -> tuple[str, str | None]:
    """How a run ended, as the ledger records it: its outcome and its last error."""
    outcome = "completed" if result.ok else ("interrupted" if result.interrupted else "failed")
    last_error = run_last_error(result.reports)
    if result.callback_errors:
        last_error = mask_secrets(result.callback_errors[-1])  # a user's callback, any text
    if result.ledger_error:
        last_error = result.ledger_error
    return outcome, last_error


def next_run(last: tuple[int, int, str | None] | None) -> tuple[int, int]:
    """The job and attempt of a run after the ``last`` one (job, attempt, outcome): a job is
    the runs up to one that completes."""
    if last is None:
        return 1, 1
    job, attempt, outcome = last
    return (job + 1, 1) if outcome == "completed" else (job, attempt + 1)


def dead_run_error(pid: int, host: str) -> str:
    """The last error of a run whose process died holding the lease."""
    return f"process {pid} on {host} died without finishing"
