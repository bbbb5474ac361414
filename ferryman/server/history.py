"""Throughput over time, per migration: what ``GET /migrate/history`` serves and the chart draws.

Neither a ledger nor a run keeps its counts over time, so the server keeps them: every snapshot
it takes (at least every SAMPLE_EVERY seconds while it serves, see :mod:`.app`) adds a point per
migration to a series kept in memory. A series starts at the migration's ``started_at`` with
nothing read and ends at its ``finished_at``; a migration that starts again (a new run) starts a
new series. So a server that starts after a run ended still draws a line from the start to the
end of each migration (its average rate), and one that watched the run draws every step.

Memory is bounded: a series keeps at most POINTS points. When it is full, every other point is
dropped and the spacing of new points doubles, so the points stay evenly spread over the whole
migration however long it runs; the rate between two kept points is their average.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .status import StatusSnapshot

POINTS = 600
"""Most points a series keeps."""
SAMPLE_EVERY = 1.0
"""Seconds between two points at first (the spacing doubles each time a series is thinned)."""


class Point(NamedTuple):
    t: float
    read: int
    succeeded: int
    failed: int


@dataclass
class Series:
    """One migration's points since it started."""

    name: str
    started_at: float
    spacing: float
    points: list[Point] = field(default_factory=list)

    def add(self, point: Point, limit: int) -> None:
        """Append ``point``, or let it replace the newest point while that one is younger than
        the spacing (the chart then shows the newest counts at once); thin when full."""
        points = self.points
        if len(points) >= 2 and point.t - points[-2].t < self.spacing:
            points[-1] = point
        elif point.t > points[-1].t or len(points) == 1:
            points.append(point)
        if len(points) > limit:
            self.points = [*points[:-1:2], points[-1]]
            self.spacing *= 2

    def to_dict(self, identity: str, state: str | None) -> dict[str, Any]:
        rows = []
        previous: Point | None = None
        for point in self.points:
            span = point.t - previous.t if previous is not None else 0.0
            rate = (point.read - previous.read) / span if previous is not None and span > 0 else 0.0
            rows.append({"t": round(point.t, 3), "read": point.read, "succeeded": point.succeeded,
                         "failed": point.failed, "rate": round(max(rate, 0.0), 3)})
            previous = point
        return {"identity": identity, "name": self.name, "state": state,
                "started_at": self.started_at, "points": rows}


class History:
    """The series of every migration the snapshots showed; safe to use from several threads."""

    def __init__(self, limit: int = POINTS, every: float = SAMPLE_EVERY) -> None:
        if limit < 3:
            raise ValueError(f"a history needs at least 3 points per series, not {limit}")
        self.limit = limit
        self.every = every
        self._series: dict[str, Series] = {}
        self._lock = threading.Lock()

    def record(self, snapshot: StatusSnapshot) -> None:
        """Add the counts ``snapshot`` shows: a point per migration that has started."""
        with self._lock:
            for migration in snapshot.migrations:
                started = migration.get("started_at")
                if not isinstance(started, (int, float)):
                    continue
                identity = migration["identity"]
                series = self._series.get(identity)
                if series is None or series.started_at != started:
                    series = self._series[identity] = Series(
                        migration.get("name") or identity, started, self.every, [Point(started, 0, 0, 0)])
                finished = migration.get("finished_at")
                at = finished if isinstance(finished, (int, float)) else snapshot.taken_at
                series.add(Point(max(at, started), int(migration.get("read") or 0),
                                 int(migration.get("succeeded") or 0), int(migration.get("failed") or 0)),
                           self.limit)

    def to_dict(self, snapshot: StatusSnapshot) -> dict[str, Any]:
        """The body of ``GET /migrate/history``: the series of the migrations ``snapshot``
        shows, in its order."""
        with self._lock:
            series = [self._series[m["identity"]].to_dict(m["identity"], m.get("state"))
                      for m in snapshot.migrations if m["identity"] in self._series]
        return {"updated_at": snapshot.taken_at, "migrations": series}
