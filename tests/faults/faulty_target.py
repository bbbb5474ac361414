"""A TARGET for the fault tests: a SQLite source copied into a destination with no unique key.

Everything comes from the environment, so one file serves every fault:

    FAULT_SRC      source URL (table ``src``: id, name)
    FAULT_DST      destination URL (table ``dst``: id, name, no unique key, so a record written
                   twice shows as two rows)
    FAULT_BATCH    page and save batch size (default 256)
    FAULT_DELAY    seconds slept every FAULT_BATCH records (a run that must outlive a signal)
    FAULT_RAISE    what ``copy``'s transform does at record FAULT_AT: ``generator`` (returns a
                   generator that raises), ``system-exit`` (raises SystemExit(0)), ``interrupt``
                   (raises KeyboardInterrupt), ``base`` (raises a bare BaseException subclass)

A second, independent migration ``side`` copies ``src`` into ``side`` (SQLite, next to the
source), to show that one migration's failure does not stop the others.
"""

from __future__ import annotations

import os
import time

from ferryman import SqlStore, migration

SRC = os.environ["FAULT_SRC"]
DST = os.environ["FAULT_DST"]
BATCH = int(os.environ.get("FAULT_BATCH", "256"))
DELAY = float(os.environ.get("FAULT_DELAY", "0"))
RAISE = os.environ.get("FAULT_RAISE", "")
AT = int(os.environ.get("FAULT_AT", "5"))


class Escaped(BaseException):
    """Neither an Exception nor a stop: what a careless library might raise."""


def _raising_generator(record):
    yield {"id": record["id"], "name": record["name"]}
    raise ValueError(f"generator of record {record['id']} broke")


@migration(source="src", dest="dst", batch_size=BATCH, save_batch_size=BATCH)
class Copy:
    def transform(self, aggregates, record):
        if DELAY and record["id"] % BATCH == 0:
            time.sleep(DELAY)
        if record["id"] == AT:
            if RAISE == "generator":
                return _raising_generator(record)
            if RAISE == "system-exit":
                raise SystemExit(0)
            if RAISE == "interrupt":
                raise KeyboardInterrupt
            if RAISE == "base":
                raise Escaped("escaped")
        return [{"id": record["id"], "name": record["name"]}]


@migration(source="src", dest="side", batch_size=BATCH)
class Side:
    def transform(self, aggregates, record):
        return [{"id": record["id"], "name": record["name"]}]


stores = [
    SqlStore("src", SRC, "src"),
    SqlStore("dst", DST, "dst"),
    SqlStore("side", SRC.replace("src.db", "side.db"), "side"),
]
migrations = [Copy, Side]
