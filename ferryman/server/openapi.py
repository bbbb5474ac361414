"""``GET /openapi.json``: an OpenAPI 3.1 document for every route of :mod:`ferryman.server.app`.

Written by hand next to the code it describes; ``tests/server/test_app.py`` checks that every
route is documented (and nothing else), and that real responses validate against the schemas.
"""

from __future__ import annotations

from typing import Any

from ..progress.reader import EVENTS_PAGE
from .status import MIGRATION_STATES, Status

NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
SECONDS: dict[str, Any] = {"type": ["number", "null"], "description": "Unix time in seconds"}

RESULT_PROPERTIES: dict[str, Any] = {
    "status": {
        "type": "string", "enum": [s.value for s in Status],
        "description": (
            "running: a run is active and its process alive; completed: the run this server "
            "watched finished with nothing left to do; migrated: the progress shows a successful "
            "completion by a run this server did not watch; failed: the last run ended with "
            "failed records or a fatal error, was interrupted, or its process died; pending: no "
            "run has ever started on this progress (keep polling, as for running)."
        ),
    },
    "step": {**NULLABLE_STRING, "description": "The migration running now, or the last one that ran."},
    "last_err": {**NULLABLE_STRING, "description": "The last error as one line; null when none."},
    "try_count": {**COUNT, "description": "Attempts made for the current job (1 for the first run); "
                  "0 before any run and for an mjg JSON progress, which keeps no run history."},
}

MIGRATION: dict[str, Any] = {
    "type": "object",
    "required": ["identity", "name", "source", "dest", "state", "total", "read", "skipped",
                 "ignored", "succeeded", "failed", "written", "rate", "eta", "last_error"],
    "properties": {
        "identity": {"type": "string", "description": "module.Class of the migration"},
        "name": {"type": "string"},
        "source": NULLABLE_STRING,
        "dest": NULLABLE_STRING,
        "state": {"type": "string", "enum": list(MIGRATION_STATES)},
        "total": {"type": ["integer", "null"], "description": "Source records, where countable"},
        "read": COUNT, "skipped": COUNT, "ignored": COUNT, "succeeded": COUNT, "failed": COUNT,
        "written": {"type": ["integer", "null"], "minimum": 0,
                    "description": "Outputs saved; null where unknown (mjg JSON progress)"},
        "retried": COUNT,
        "rate": {"type": "number", "description": "Source records per second in this run"},
        "eta": {"type": ["number", "null"], "description": "Seconds left, when known"},
        "last_error": NULLABLE_STRING,
        "fatal_error": NULLABLE_STRING,
        "held_back_by": {"type": "array", "items": {"type": "string"}},
        "preloaded": {"type": "object", "description": "Matched stores read into memory once in this run, "
                      "by name: records and estimated MB",
                      "additionalProperties": {"type": "object", "properties": {"records": COUNT,
                                                                              "mb": {"type": "number"}}}},
        "started_at": SECONDS,
        "finished_at": SECONDS,
    },
}

TOTALS: dict[str, Any] = {
    "type": "object",
    "required": ["migrations", "completed", "total", "read", "skipped", "ignored", "succeeded",
                 "failed", "written", "rate", "eta", "uncounted", "elapsed", "average_rate"],
    "properties": {
        "migrations": COUNT, "completed": COUNT,
        "total": {"type": ["integer", "null"], "description": (
            "The known totals added up (see uncounted); null when none is known or a migration "
            "that started cannot count its source")},
        "uncounted": {**COUNT, "description": "Migrations left out of total: not started yet "
                      "(a source is counted when its migration starts) or held back"},
        "elapsed": {"type": ["number", "null"], "description": "Seconds the newest run took "
                    "(so far, while it runs); null without a run history"},
        "average_rate": {"type": ["number", "null"], "description": "Source records per second "
                         "the newest run read on average"},
        "read": COUNT, "skipped": COUNT, "ignored": COUNT, "succeeded": COUNT, "failed": COUNT,
        "written": COUNT,
        "rate": {"type": "number"},
        "eta": {"type": ["number", "null"]},
    },
}

RUN: dict[str, Any] = {
    "type": "object",
    "required": ["id", "job", "attempt", "started_at", "ended_at", "outcome", "last_error"],
    "properties": {
        "id": {"type": "integer"},
        "job": {"type": "integer", "description": "Runs of one job count attempts 1, 2, 3..."},
        "attempt": {"type": "integer", "minimum": 1},
        "started_at": {"type": "number", "description": "Unix time in seconds"},
        "ended_at": SECONDS,
        "outcome": {"type": ["string", "null"],
                    "enum": ["completed", "failed", "interrupted", "died", None],
                    "description": "null while the run is alive"},
        "pid": {"type": ["integer", "null"]},
        "host": NULLABLE_STRING,
        "step": NULLABLE_STRING,
        "last_error": NULLABLE_STRING,
    },
}

FAILED_RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["migration", "id", "description", "cause", "action"],
    "properties": {
        "migration": {"type": "string"},
        "id": {"type": ["integer", "string", "array"], "items": {"type": ["integer", "string"]},
               "description": "The record id; an array for a composite id"},
        "description": {"type": "string"},
        "cause": {"type": "string", "description": "The full cause (a traceback)"},
        "action": {"type": "string", "enum": ["RETRY", "IGNORE"]},
        "timestamp": NULLABLE_STRING,
    },
}

PROGRESS: dict[str, Any] = {
    "type": "object",
    "required": [*RESULT_PROPERTIES, "updated_at", "totals", "migrations", "runs",
                 "failed_records", "failed_total"],
    "properties": {
        **RESULT_PROPERTIES,
        "updated_at": {"type": "number", "description": "When the snapshot was taken (Unix time)"},
        "totals": {"$ref": "#/components/schemas/Totals"},
        "migrations": {"type": "array", "items": {"$ref": "#/components/schemas/Migration"}},
        "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"},
                 "description": "Run history, newest first"},
        "failed_records": {"type": "array", "items": {"$ref": "#/components/schemas/FailedRecord"},
                           "description": "The newest failed records, newest first (failed_total counts them all)"},
        "failed_total": COUNT,
        "partitions": {"type": "array", "items": {"$ref": "#/components/schemas/Partition"},
                       "description": "The key-range partitions of a run with --workers, while it has them"},
    },
}

PARTITION: dict[str, Any] = {
    "type": "object",
    "required": ["migration", "index", "after", "upto", "state", "attempts", "holder", "rate"],
    "properties": {
        "migration": {"type": "string"},
        "index": COUNT,
        "after": {"description": "The range's lower bound, excluded (null: from the first record)"},
        "upto": {"description": "The range's upper bound, included (null: to the last record)"},
        "state": {"type": "string", "enum": ["pending", "running", "completed", "failed", "interrupted", "died"]},
        "attempts": COUNT,
        "holder": {**NULLABLE_STRING, "description": "The live worker at it: pid N on HOST"},
        "rate": {"type": "number", "description": "Source records per second of its newest attempt"},
        **{name: COUNT for name in ("read", "succeeded", "failed", "skipped", "ignored", "written")},
    },
}


EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["seq", "event", "time"],
    "properties": {
        "seq": {"type": "integer", "minimum": 1, "description": "Rising; page with ?after=seq"},
        "event": {"type": "string", "description": (
            "run.started, run.completed, run.failed, run.stopped, run.retrying, migration.started, "
            "migration.completed, migration.failed, migration.stopped, migration.held_back, "
            "records.marked, migration.reset, verification.passed, verification.failed")},
        "time": {"type": "string", "description": "UTC, ISO 8601"},
        "migration": {"type": "string"},
        "attempt": {"type": "integer"},
        "counts": {"type": "object", "additionalProperties": COUNT},
        "last_err": {"type": "string"},
    },
}

EVENTS: dict[str, Any] = {
    "type": "object",
    "required": ["events", "next"],
    "properties": {
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "next": {"type": "integer", "minimum": 0,
                 "description": "The seq to ask for next (?after=next); the same when nothing is new"},
    },
}

VERIFIED_MIGRATION: dict[str, Any] = {
    "type": "object",
    "required": ["name", "ok", "checks", "problems"],
    "properties": {
        "name": {"type": "string"},
        "identity": {"type": "string"},
        "ok": {"type": "boolean"},
        "checks": {"type": "object", "description": "Each check's counts and whether it passed"},
        "problems": {"type": "array", "items": {"type": "object"},
                     "description": "The first problems found, each with its check, record id and detail"},
    },
}

VERIFICATION: dict[str, Any] = {
    "type": "object",
    "required": ["status", "ok", "migrations"],
    "properties": {
        "status": {"type": "string", "enum": ["passed", "failed", "none"],
                   "description": "none: no verification has run on this progress"},
        "ok": {"type": ["boolean", "null"]},
        "sample": {"type": ["integer", "null"], "description": "Records replayed per migration; null: all"},
        "started_at": {"type": "string"},
        "finished_at": {"type": "string"},
        "migrations": {"type": "array", "items": {"$ref": "#/components/schemas/VerifiedMigration"}},
    },
}

HISTORY: dict[str, Any] = {
    "type": "object",
    "required": ["updated_at", "migrations"],
    "properties": {
        "updated_at": {"type": "number", "description": "When the snapshot was taken (Unix time)"},
        "migrations": {"type": "array", "items": {
            "type": "object",
            "required": ["identity", "name", "state", "started_at", "points"],
            "properties": {
                "identity": {"type": "string"}, "name": {"type": "string"},
                "state": NULLABLE_STRING,
                "started_at": {"type": "number", "description": "Unix time; the first point's t"},
                "points": {"type": "array", "items": {
                    "type": "object", "required": ["t", "read", "succeeded", "failed", "rate"],
                    "properties": {
                        "t": {"type": "number", "description": "Unix time"},
                        "read": COUNT, "succeeded": COUNT, "failed": COUNT,
                        "rate": {"type": "number", "minimum": 0,
                                 "description": "Source records per second since the point before"},
                    }}},
            }}},
    },
}

FAILED_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["total", "offset", "limit", "partial", "records"],
    "properties": {
        "total": {**COUNT, "description": "How many failed records the search chose"},
        "offset": COUNT, "limit": COUNT,
        "partial": {"type": "boolean", "description": "True when the server keeps only the newest "
                    "failed records (a run serving a progress kept in memory), so more may exist"},
        "records": {"type": "array", "description": "Newest first", "items": {"allOf": [
            {"$ref": "#/components/schemas/FailedRecord"},
            {"type": "object", "required": ["identity"], "properties": {"identity": {"type": "string"}}},
        ]}},
    },
}

ACTIONS: dict[str, Any] = {
    "type": "object",
    "required": ["enabled", "actions", "token_header"],
    "properties": {
        "enabled": {"type": "boolean", "description": "Whether the server was started with --allow-actions"},
        "actions": {"type": "array", "items": {"type": "string"}},
        "token_header": {"type": "string", "description": "The header that must hold the token"},
    },
}

ACTION_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "action": {"type": "string", "description": "ignore or retry: set the action of failed records"},
        "migration": {"type": "string", "description": "The migration the records failed in (its name)"},
        "ids": {"type": "array", "minItems": 1, "items": FAILED_RECORD["properties"]["id"]},
    },
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _text(media_type: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SERVER_ERROR = _json("Error", "The server itself failed (e.g. the progress cannot be read)")


def _get(summary: str, responses: dict[str, Any], tag: str = "status") -> dict[str, Any]:
    return {"get": {"summary": summary, "tags": [tag], "responses": responses}}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the status server."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ferryman status API", "version": version,
            "description": "Status, progress and metrics of a ferryman migration job. "
                           "Served on loopback by default; read-only unless started with "
                           "--allow-actions (then POST /migrate/actions needs the server's token).",
        },
        "paths": {
            "/migrate/result": _get("The job's status, step, last error and attempts", {
                "200": _json("Result", "The status now"), "500": SERVER_ERROR}),
            "/migrate/progress": _get("Per migration counts, totals, rate, ETA, runs, failures", {
                "200": _json("Progress", "The progress now"), "500": SERVER_ERROR}),
            "/migrate/events": {"get": {
                "summary": "The event log: every status change, oldest first",
                "tags": ["status"],
                "parameters": [
                    {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0},
                     "description": "Only events whose seq is above this (default 0)"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0,
                                                                "maximum": EVENTS_PAGE}},
                ],
                "responses": {"200": _json("Events", "A page of events"),
                              "400": _json("Error", "after or limit is not an integer >= 0"),
                              "500": SERVER_ERROR}}},
            "/migrate/verify": _get("The newest verification: counts, replayed records, problems", {
                "200": _json("Verification", "The newest verification result"), "500": SERVER_ERROR}),
            "/migrate/history": _get("Counts over time per migration, for a throughput chart", {
                "200": _json("History", "Each migration's points since it started, at most 600, "
                             "evenly spread; kept in the server's memory"),
                "500": SERVER_ERROR}),
            "/migrate/failed": {"get": {
                "summary": "Failed records, searched and paged", "tags": ["status"],
                "parameters": [
                    _query("migration", {"type": "string"}, "A migration's name; all when absent"),
                    _query("q", {"type": "string", "maxLength": 1000},
                           "Text looked for, in any case, in the id, description and cause"),
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}, "Records skipped"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                           "Records on the page"),
                ],
                "responses": {"200": _json("FailedPage", "One page, newest first"),
                              "400": _json("Error", "A parameter is wrong, or names no migration"),
                              "404": _json("Error", "The status source keeps no failed records"),
                              "500": SERVER_ERROR}}},
            "/migrate/actions": {
                "get": {"summary": "Whether actions are allowed, and which", "tags": ["actions"],
                        "responses": {"200": _json("Actions", "What this server allows")}},
                "post": {
                    "summary": "Mark failed records IGNORE or RETRY", "tags": ["actions"],
                    "description": "Only on a server started with --allow-actions, with the token in "
                                   "the X-Ferryman-Token header and a JSON body. Refused while a live "
                                   "run holds the progress. Every action is logged.",
                    "parameters": [{"name": "X-Ferryman-Token", "in": "header", "required": True,
                                    "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ActionRequest"}}}},
                    "responses": {
                        "200": {"description": "Done: how many records changed, by migration",
                                "content": {"application/json": {"schema": {"type": "object"}}}},
                        "400": _json("Error", "The action or its fields are wrong; nothing changed"),
                        "401": _json("Error", "No token, or not the server's token"),
                        "403": _json("Error", "The server is read-only (no --allow-actions)"),
                        "409": _json("Error", "A live run holds the progress; nothing changed"),
                        "413": _json("Error", "The body is too large"),
                        "415": _json("Error", "The body is not sent as JSON"),
                        "500": SERVER_ERROR,
                    }},
            },
            "/metrics": _get("Prometheus metrics", {"200": _text(
                "text/plain", "Text exposition format 0.0.4; ferryman_up is 0 (and the only "
                "metric) when the progress cannot be read")}, "metrics"),
            "/openapi.json": _get("This document", {"200": {
                "description": "OpenAPI 3.1", "content": {"application/json": {
                    "schema": {"type": "object"}}}}}, "meta"),
            "/": _get("The live dashboard", {"200": _text("text/html", "The dashboard page")},
                      "dashboard"),
            "/static/dashboard.js": _get("The dashboard's script", {
                "200": _text("text/javascript", "JavaScript")}, "dashboard"),
            "/static/dashboard.css": _get("The dashboard's style sheet", {
                "200": _text("text/css", "CSS")}, "dashboard"),
        },
        "components": {"schemas": {
            "Result": {"type": "object", "required": list(RESULT_PROPERTIES),
                       "additionalProperties": False, "properties": RESULT_PROPERTIES},
            "Progress": PROGRESS,
            "Totals": TOTALS,
            "Migration": MIGRATION,
            "Run": RUN,
            "FailedRecord": FAILED_RECORD,
            "Partition": PARTITION,
            "Event": EVENT,
            "Events": EVENTS,
            "Verification": VERIFICATION,
            "VerifiedMigration": VERIFIED_MIGRATION,
            "History": HISTORY,
            "FailedPage": FAILED_PAGE,
            "Actions": ACTIONS,
            "ActionRequest": ACTION_REQUEST,
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}}},
        }},
    }
