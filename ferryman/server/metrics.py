"""``GET /metrics``: the snapshot in Prometheus' text exposition format (version 0.0.4).

Counters are per run (they restart at 0 when a new run starts, which Prometheus reads as a
counter reset). A migration is labelled by its name, or by its identity where two share a name.
When the progress cannot be read, the page still answers with ``ferryman_up 0`` and nothing
else, as exporters do, so that an alert can tell "ledger unreadable" from "server down".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .status import MIGRATION_STATES, Status, StatusSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OUTCOMES = ("succeeded", "failed", "skipped", "ignored")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


Sample = tuple[dict[str, str], float | int]


class Exposition:
    """Collects metric families and renders them, each with its HELP and TYPE lines."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self._lines.append(f"# HELP {name} {escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
            self._lines.append(f"{name}{{{label_text}}} {format_value(value)}" if label_text
                               else f"{name} {format_value(value)}")

    def render(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(migrations: list[dict[str, Any]]) -> list[str]:
    names = [str(m.get("name") or m.get("identity")) for m in migrations]
    return [str(m.get("identity")) if names.count(n) > 1 else n for m, n in zip(migrations, names)]


def render_down() -> str:
    out = Exposition()
    out.family("ferryman_up", "gauge", "1 when the status server could read the migration status.",
               [({}, 0)])
    return out.render()


def render(snapshot: StatusSnapshot) -> str:
    out = Exposition()
    out.family("ferryman_up", "gauge", "1 when the status server could read the migration status.",
               [({}, 1)])
    out.family("ferryman_status", "gauge",
               "1 for the current status of the migration job (as in GET /migrate/result), else 0.",
               [({"status": s.value}, int(snapshot.status == s.value)) for s in Status])
    out.family("ferryman_run_attempt", "gauge",
               "Attempts made for the current job (try_count); 0 before any run.",
               [({}, snapshot.try_count)])
    out.family("ferryman_failed_records", "gauge",
               "Failed records the progress holds (either action).", [({}, snapshot.failed_total)])
    migrations = snapshot.migrations
    labels = _labels(migrations)
    out.family("ferryman_records_total", "counter",
               "Source records dealt with by each migration in the current run, by outcome.",
               [({"migration": label, "outcome": o}, int(m.get(o) or 0))
                for m, label in zip(migrations, labels) for o in OUTCOMES])
    out.family("ferryman_records_read_total", "counter",
               "Source records read by each migration in the current run.",
               [({"migration": label}, int(m.get("read") or 0)) for m, label in zip(migrations, labels)])
    out.family("ferryman_outputs_written_total", "counter",
               "Output records saved to the destination by each migration in the current run.",
               [({"migration": label}, int(m.get("written") or 0))
                for m, label in zip(migrations, labels)])
    out.family("ferryman_source_records", "gauge",
               "Records in each migration's source, where the store can count them.",
               [({"migration": label}, int(m["total"])) for m, label in zip(migrations, labels)
                if m.get("total") is not None])
    out.family("ferryman_migration_state", "gauge",
               "1 for the state each migration is in, else 0.",
               [({"migration": label, "state": state}, int(m.get("state") == state))
                for m, label in zip(migrations, labels) for state in MIGRATION_STATES])
    out.family("ferryman_migration_rate", "gauge",
               "Source records per second each migration read in the current run.",
               [({"migration": label}, float(m.get("rate") or 0.0))
                for m, label in zip(migrations, labels)])
    out.family("ferryman_migration_eta_seconds", "gauge",
               "Seconds each running migration still needs, where its total is known.",
               [({"migration": label}, float(m["eta"])) for m, label in zip(migrations, labels)
                if m.get("eta") is not None])
    return out.render()


VERIFY_CHECKS = ("counts", "outputs", "replay", "hook")


def render_verification(verification: dict[str, Any] | None) -> str:
    """The newest verification (``GET /migrate/verify``) as metrics; nothing before any."""
    if not verification or verification.get("ok") is None:
        return ""
    out = Exposition()
    out.family("ferryman_verification_ok", "gauge",
               "1 when the newest verification passed every check, else 0.",
               [({}, int(bool(verification["ok"])))])
    migrations = [m for m in verification.get("migrations") or [] if isinstance(m, dict)]
    labels = _labels(migrations)
    out.family("ferryman_verification_check_ok", "gauge",
               "1 when the check passed for the migration in the newest verification, else 0.",
               [({"migration": label, "check": check}, int(bool((m.get("checks") or {}).get(check, {}).get("ok"))))
                for m, label in zip(migrations, labels) for check in VERIFY_CHECKS])
    out.family("ferryman_verification_records_checked", "gauge",
               "Succeeded records the newest verification replayed, per migration.",
               [({"migration": label}, int(((m.get("checks") or {}).get("replay") or {}).get("checked") or 0))
                for m, label in zip(migrations, labels)])
    return out.render()
