"""The agent's persistent state in ``ROOT/state.db`` (SQLite, WAL).

What survives an agent crash (even SIGKILL): the installed component set with versions,
configuration and run-with settings, the journal of every process the agent started (so a
restarted agent can stop leftovers before starting anything), and the deployment history and
queue.

**The process journal** is write-ahead: :meth:`Store.intend` commits a row (a fresh tag, the
component, the step) *before* the process is spawned, and the process carries the tag in its
environment (``ROOST_PROCESS_TAG``); :meth:`Store.spawned` adds its process group id and start
time; :meth:`Store.ended` deletes the row once none of its processes is alive. There is no moment
at which a live process is unknown to the journal: a crash between the intent and the spawn
leaves a row whose processes are found by their tag. The file is created mode 0600.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roost.errors import NotFoundError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS components (
    name TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    is_root INTEGER NOT NULL,
    hub_root INTEGER NOT NULL DEFAULT 0,
    local_version TEXT,
    configuration TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'NEW',
    pgid INTEGER,
    proc_create_time REAL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    tag TEXT PRIMARY KEY,
    component TEXT NOT NULL,
    step TEXT NOT NULL,
    pgid INTEGER,
    create_time REAL,
    intended_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    status TEXT NOT NULL,
    detailed_status TEXT,
    request TEXT NOT NULL,
    errors TEXT NOT NULL DEFAULT '[]',
    failure_cause TEXT,
    notes TEXT NOT NULL DEFAULT '[]'
);
"""


@dataclass
class ComponentRecord:
    """One installed component. ``is_root``: asked for by a local deployment (at ``local_version``
    when that differs from ``version``); ``hub_root``: asked for by the hub, whose version wins."""

    name: str
    version: str
    is_root: bool
    configuration: dict[str, Any]
    state: str = "NEW"
    pgid: int | None = None
    proc_create_time: float | None = None
    hub_root: bool = False
    local_version: str | None = None
    #: Greengrass' ``componentToRunWithInfo`` entry (``posixUser``, ...), kept across deployments.
    run_with: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JournalEntry:
    """A process the agent started: its tag (None for rows of agents older than the journal),
    component, step, and (once spawned) process group id and leader start time."""

    tag: str | None
    component: str
    step: str
    pgid: int | None
    create_time: float | None


@dataclass
class DeploymentRecord:
    id: str
    seq: int
    created_at: float
    updated_at: float
    status: str
    request: dict[str, Any]
    detailed_status: str | None = None
    errors: list[str] = field(default_factory=list)
    failure_cause: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_ipc(self) -> dict[str, Any]:
        """The Greengrass ``LocalDeployment`` shape (plus Roost's ``errors``)."""
        details: dict[str, Any] = {}
        if self.detailed_status:
            details["detailedDeploymentStatus"] = self.detailed_status
        if self.errors:
            details["deploymentErrorStack"] = self.errors
        if self.failure_cause:
            details["deploymentFailureCause"] = self.failure_cause
        if self.notes:
            details["roostNotes"] = self.notes
        out: dict[str, Any] = {"deploymentId": self.id, "status": self.status,
                               "createdOn": f"{self.created_at:.3f}"}
        if details:
            out["deploymentStatusDetails"] = details
        return out


class Store:
    """A thin typed layer over the SQLite file; one connection, used from the event loop thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():  # owner-only: component users must not read the agent's state
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(components)")}
        if "run_with" not in columns:  # a state.db written before run-with settings were kept
            self._db.execute("ALTER TABLE components ADD COLUMN run_with TEXT NOT NULL DEFAULT '{}'")
        self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- meta --------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- components ----------------------------------------------------------------------------
    def components(self) -> dict[str, ComponentRecord]:
        rows = self._db.execute("SELECT name, version, is_root, configuration, state, pgid, proc_create_time, "
                                "hub_root, local_version, run_with FROM components ORDER BY name").fetchall()
        return {r[0]: ComponentRecord(r[0], r[1], bool(r[2]), json.loads(r[3]), r[4], r[5], r[6], bool(r[7]), r[8],
                                      json.loads(r[9])) for r in rows}

    def component(self, name: str) -> ComponentRecord:
        found = self.components().get(name)
        if found is None:
            raise NotFoundError(f"component {name} is not installed", code="COMPONENT_NOT_FOUND")
        return found

    def replace_components(self, records: dict[str, ComponentRecord]) -> None:
        """Atomically make ``records`` the installed set (keeps process ids of unchanged rows)."""
        now = time.time()
        with self.transaction():
            marks = ",".join("?" * len(records))
            self._db.execute(f"DELETE FROM components WHERE name NOT IN ({marks})", tuple(records))
            for r in records.values():
                self._db.execute(
                    "INSERT INTO components(name, version, is_root, hub_root, local_version, configuration, state, "
                    "run_with, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "version = excluded.version, is_root = excluded.is_root, hub_root = excluded.hub_root, "
                    "local_version = excluded.local_version, configuration = excluded.configuration, "
                    "run_with = excluded.run_with, updated_at = excluded.updated_at",
                    (r.name, r.version, int(r.is_root), int(r.hub_root), r.local_version,
                     json.dumps(r.configuration), r.state, json.dumps(r.run_with), now))

    def set_configuration(self, name: str, configuration: dict[str, Any]) -> None:
        self._db.execute("UPDATE components SET configuration = ?, updated_at = ? WHERE name = ?",
                         (json.dumps(configuration), time.time(), name))

    def set_state(self, name: str, state: str) -> None:
        self._db.execute("UPDATE components SET state = ?, updated_at = ? WHERE name = ?",
                         (state, time.time(), name))

    # -- the process journal (see the module docstring) ----------------------------------------
    def intend(self, tag: str, component: str, step: str) -> None:
        """Record, before spawning it, that a process tagged ``tag`` is about to start."""
        self._db.execute("INSERT INTO processes(tag, component, step, intended_at) VALUES (?, ?, ?, ?)",
                         (tag, component, step, time.time()))

    def spawned(self, tag: str, pgid: int, create_time: float) -> None:
        self._db.execute("UPDATE processes SET pgid = ?, create_time = ? WHERE tag = ?", (pgid, create_time, tag))

    def ended(self, tag: str) -> None:
        """None of the processes tagged ``tag`` is alive any more."""
        self._db.execute("DELETE FROM processes WHERE tag = ?", (tag,))

    def journal(self) -> list[JournalEntry]:
        """Every process the agent started and has not seen end (oldest first)."""
        rows = self._db.execute("SELECT tag, component, step, pgid, create_time FROM processes "
                                "ORDER BY intended_at").fetchall()
        entries = [JournalEntry(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        # Process groups recorded by agents older than the journal (no tag to search by).
        legacy = self._db.execute("SELECT name, pgid, proc_create_time FROM components "
                                  "WHERE pgid IS NOT NULL").fetchall()
        entries += [JournalEntry(None, r[0], "run", int(r[1]), r[2]) for r in legacy]
        return entries

    def clear_legacy_processes(self) -> None:
        self._db.execute("UPDATE components SET pgid = NULL, proc_create_time = NULL WHERE pgid IS NOT NULL")

    # -- deployments ---------------------------------------------------------------------------
    def add_deployment(self, deployment_id: str, request: dict[str, Any]) -> DeploymentRecord:
        now = time.time()
        with self.transaction():
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM deployments").fetchone()[0]
            self._db.execute("INSERT INTO deployments(id, seq, created_at, updated_at, status, request) "
                             "VALUES (?, ?, ?, ?, 'QUEUED', ?)",
                             (deployment_id, seq, now, now, json.dumps(request)))
        return self.deployment(deployment_id)

    def update_deployment(self, deployment_id: str, status: str, detailed_status: str | None = None,
                          errors: list[str] | None = None, failure_cause: str | None = None,
                          notes: list[str] | None = None) -> None:
        self._db.execute("UPDATE deployments SET status = ?, detailed_status = ?, errors = ?, failure_cause = ?, "
                         "notes = COALESCE(?, notes), updated_at = ? WHERE id = ?",
                         (status, detailed_status, json.dumps(errors or []), failure_cause,
                          json.dumps(notes) if notes is not None else None, time.time(), deployment_id))

    def deployment(self, deployment_id: str) -> DeploymentRecord:
        row = self._db.execute("SELECT id, seq, created_at, updated_at, status, request, detailed_status, "
                               "errors, failure_cause, notes FROM deployments WHERE id = ?",
                               (deployment_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no deployment with id {deployment_id}", code="DEPLOYMENT_NOT_FOUND")
        return _deployment(row)

    def deployments(self, status: str | None = None) -> list[DeploymentRecord]:
        sql = ("SELECT id, seq, created_at, updated_at, status, request, detailed_status, errors, failure_cause, "
               "notes FROM deployments")
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return [_deployment(r) for r in self._db.execute(sql + " ORDER BY seq", args).fetchall()]

    def deployment_durations(self, limit: int = 10_000) -> list[tuple[str, float]]:
        """``(status, seconds from queued to its latest update)`` of the newest ``limit`` deployments."""
        rows = self._db.execute("SELECT status, updated_at - created_at FROM deployments ORDER BY seq DESC LIMIT ?",
                                (limit,)).fetchall()
        return [(str(r[0]), float(r[1])) for r in rows]


def _deployment(row: tuple[Any, ...]) -> DeploymentRecord:
    return DeploymentRecord(id=row[0], seq=row[1], created_at=row[2], updated_at=row[3], status=row[4],
                            request=json.loads(row[5]), detailed_status=row[6], errors=json.loads(row[7]),
                            failure_cause=row[8], notes=json.loads(row[9]))
