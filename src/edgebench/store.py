"""SQLite store: the seam between stages. WAL mode, named migrations, idempotent keyed rows.

A result row is keyed by a hash of (stage, model sha256, full config, build id, host fingerprint),
so re-running a stage finds what is already measured and resumes instead of duplicating. Every
`put` commits at once: a run killed with -9 keeps every row it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from edgebench.errors import StoreError

__all__ = ["MIGRATIONS", "Provenance", "Row", "Store", "result_key"]

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append((fn.__name__, fn))
    return fn


@migration
def m001_results(db: sqlite3.Connection) -> None:
    db.execute("""
        CREATE TABLE results (
            key TEXT PRIMARY KEY,
            stage TEXT NOT NULL,
            model_sha256 TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            build_id TEXT NOT NULL,
            host_fingerprint TEXT NOT NULL,
            status TEXT NOT NULL,
            params TEXT NOT NULL,      -- JSON: every parameter that produced the row
            record TEXT NOT NULL,      -- JSON: the stage's typed record
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX results_stage_model ON results (stage, model_sha256)")


@migration
def m002_models(db: sqlite3.Connection) -> None:
    # sha256 is computed once per (path, size, mtime): hashing a 15 GB GGUF takes a minute on a board.
    db.execute("""
        CREATE TABLE models (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            name TEXT NOT NULL,
            info TEXT NOT NULL,        -- JSON ModelInfo
            added_at TEXT NOT NULL
        )""")


@migration
def m003_hosts_runtimes(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE hosts (fingerprint TEXT PRIMARY KEY, info TEXT NOT NULL, seen_at TEXT NOT NULL)")
    db.execute("CREATE TABLE runtimes (build_id TEXT PRIMARY KEY, info TEXT NOT NULL, seen_at TEXT NOT NULL)")


@migration
def m004_record_version(db: sqlite3.Connection) -> None:
    # The version of the stage's record schema a row was written with (edgebench.stages): a stage
    # reuses only rows of its current version, so a changed meaning is measured again, not mixed.
    db.execute("ALTER TABLE results ADD COLUMN record_version INTEGER NOT NULL DEFAULT 1")


class Provenance(BaseModel):
    """What every stored row names: which llama.cpp, which host, which model file."""

    model_config = ConfigDict(frozen=True)

    build_id: str
    host_fingerprint: str
    model_sha256: str


class Row(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    stage: str
    provenance: Provenance
    config_hash: str
    status: str
    params: dict[str, Any]
    record: dict[str, Any]
    created_at: str
    version: int = 1  # the stage's record schema version (edgebench.stages)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def result_key(stage: str, prov: Provenance, params: dict[str, Any]) -> tuple[str, str]:
    """(row key, config hash): a stable hash of the stage, provenance and full parameters."""
    cfg = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]
    blob = json.dumps([stage, prov.model_sha256, cfg, prov.build_id, prov.host_fingerprint])
    return hashlib.sha256(blob.encode()).hexdigest()[:24], cfg


_MOVE_HINT = "set data_dir in edgebench.toml (or $EDGEBENCH_HOME) to a writable directory"


def _writable(directory: Path) -> bool:
    """Can we create files here? (os.access says yes to root even where the kernel says no.)"""
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _cause(exc: sqlite3.Error) -> str:
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return f"cannot write ({text}); the rows stored before are kept"
    return text


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"store {path}: cannot create {path.parent}: {exc.strerror}; {_MOVE_HINT}"
            ) from exc
        try:
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            self._wal()
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.migrate()
        except (sqlite3.Error, StoreError) as exc:
            self.db.close()
            if isinstance(exc, StoreError):
                raise
            raise self._open_error(exc) from exc

    def _wal(self) -> None:
        # Switching a fresh file to WAL can answer "database is locked" at once, without the busy
        # timeout, while another process opens it too (seen in 1 of ~700 concurrent first opens).
        deadline = time.monotonic() + 30
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _open_error(self, exc: sqlite3.Error) -> StoreError:
        # SQLite says "unable to open database file" / "attempt to write a readonly database":
        # say which path is in the way and how to use another one.
        parent = self.path.parent
        if self.path.is_dir():
            return StoreError(f"store {self.path}: is a directory; {_MOVE_HINT}")
        if not _writable(parent):
            return StoreError(f"store {self.path}: {parent} is not writable; {_MOVE_HINT}")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return StoreError(f"store {self.path}: the file is not writable; {_MOVE_HINT}")
        return StoreError(f"store {self.path}: cannot open: {_cause(exc)}")

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        """db.execute with SQLite's errors (disk full, locked past the timeout, corrupt) as one
        StoreError naming the store; every row committed before stays."""
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path}: {_cause(exc)}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _applied(self) -> set[str]:
        try:
            return {r[0] for r in self.db.execute("SELECT name FROM _migrations")}
        except sqlite3.OperationalError:  # no such table: a fresh store
            return set()

    def migrate(self) -> list[str]:
        """Apply the missing migrations. What is applied is read again under the write lock:
        a reading taken before it races other processes opening the same fresh store."""
        if self._applied() >= {name for name, _ in MIGRATIONS}:
            return []  # the common case, without taking the write lock
        applied = []
        with self.transaction():
            self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
            done = self._applied()
            for name, fn in MIGRATIONS:
                if name not in done:
                    fn(self.db)
                    self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, _now()))
                    applied.append(name)
        return applied

    def transaction(self) -> _Tx:
        return _Tx(self)

    # results ---------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self._execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone() is not None

    def put(
        self,
        stage: str,
        prov: Provenance,
        params: dict[str, Any],
        record: BaseModel | dict[str, Any],
        status: str = "ok",
        version: int = 1,
    ) -> Row:
        """Insert or replace one result row, committed before returning. `version` is the stage's
        record schema version (edgebench.stages)."""
        key, cfg = result_key(stage, prov, params)
        rec = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        row = Row(
            key=key,
            stage=stage,
            provenance=prov,
            config_hash=cfg,
            status=status,
            params=params,
            record=rec,
            created_at=_now(),
            version=version,
        )
        self._execute(
            "INSERT OR REPLACE INTO results (key, stage, model_sha256, config_hash, build_id, "
            "host_fingerprint, status, params, record, created_at, record_version) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                stage,
                prov.model_sha256,
                cfg,
                prov.build_id,
                prov.host_fingerprint,
                status,
                json.dumps(params, sort_keys=True, default=str),
                json.dumps(rec),
                row.created_at,
                version,
            ),
        )
        return row

    def get(self, key: str) -> Row | None:
        r = self._execute("SELECT * FROM results WHERE key=?", (key,)).fetchone()
        return _row(r) if r else None

    def rows(self, stage: str | None = None, model_sha256: str | None = None) -> Iterator[Row]:
        sql, args = "SELECT * FROM results WHERE 1=1", []
        if stage:
            sql += " AND stage=?"
            args.append(stage)
        if model_sha256:
            sql += " AND model_sha256=?"
            args.append(model_sha256)
        with closing(self._execute(sql + " ORDER BY created_at, rowid", args)) as cur:  # insertion order
            for r in cur:
                yield _row(r)

    def count(self, stage: str | None = None) -> int:
        if stage:
            return int(self._execute("SELECT COUNT(*) FROM results WHERE stage=?", (stage,)).fetchone()[0])
        return int(self._execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # models ----------------------------------------------------------------------------------
    def cached_model(self, path: str, size: int, mtime_ns: int) -> dict[str, Any] | None:
        r = self._execute(
            "SELECT info FROM models WHERE path=? AND size=? AND mtime_ns=?", (path, size, mtime_ns)
        ).fetchone()
        return dict(json.loads(r[0])) if r else None

    def put_model(
        self, path: str, size: int, mtime_ns: int, sha256: str, name: str, info: dict[str, Any]
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?)",
            (path, size, mtime_ns, sha256, name, json.dumps(info), _now()),
        )

    def models(self) -> list[dict[str, Any]]:
        return [
            dict(json.loads(r[0])) for r in self._execute("SELECT info FROM models ORDER BY added_at, path")
        ]

    def remove_model(self, path: str) -> bool:
        return self._execute("DELETE FROM models WHERE path=?", (path,)).rowcount > 0

    def insert_row(self, row: Row) -> None:
        """Store a row as it is (created_at and version kept): an imported one (edgebench.pool)."""
        self._execute(
            "INSERT INTO results (key, stage, model_sha256, config_hash, build_id, host_fingerprint, status, "
            "params, record, created_at, record_version) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.key,
                row.stage,
                row.provenance.model_sha256,
                row.config_hash,
                row.provenance.build_id,
                row.provenance.host_fingerprint,
                row.status,
                json.dumps(row.params, sort_keys=True, default=str),
                json.dumps(row.record),
                row.created_at,
                row.version,
            ),
        )

    # provenance records ----------------------------------------------------------------------
    def hosts(self) -> dict[str, dict[str, Any]]:
        return {fp: json.loads(info) for fp, info in self._execute("SELECT fingerprint, info FROM hosts")}

    def runtimes(self) -> dict[str, dict[str, Any]]:
        return {b: json.loads(info) for b, info in self._execute("SELECT build_id, info FROM runtimes")}

    def put_host_json(self, fingerprint: str, info: dict[str, Any], *, replace: bool = False) -> bool:
        """A host record from elsewhere (a pooled bundle); an existing one is kept unless `replace`."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        cur = self._execute(f"{verb} INTO hosts VALUES (?,?,?)", (fingerprint, json.dumps(info), _now()))
        return cur.rowcount > 0

    def put_runtime_json(self, build_id: str, info: dict[str, Any]) -> bool:
        cur = self._execute(
            "INSERT OR IGNORE INTO runtimes VALUES (?,?,?)", (build_id, json.dumps(info), _now())
        )
        return cur.rowcount > 0

    def put_host(self, fingerprint: str, info: BaseModel) -> None:
        self._execute(
            "INSERT OR REPLACE INTO hosts VALUES (?,?,?)", (fingerprint, info.model_dump_json(), _now())
        )

    def put_runtime(self, build_id: str, info: BaseModel) -> None:
        self._execute(
            "INSERT OR REPLACE INTO runtimes VALUES (?,?,?)", (build_id, info.model_dump_json(), _now())
        )


class _Tx:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> sqlite3.Connection:
        self.store._execute("BEGIN IMMEDIATE")
        return self.store.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                self.store._execute("COMMIT")
        finally:
            if self.store.db.in_transaction:  # an error, or a COMMIT that failed (disk full)
                with suppress(sqlite3.Error):  # the error being raised is the one to report
                    self.store.db.execute("ROLLBACK")


def _row(r: tuple[Any, ...]) -> Row:
    key, stage, sha, cfg, build_id, fp, status, params, record, created, version = r
    return Row(
        key=key,
        stage=stage,
        provenance=Provenance(build_id=build_id, host_fingerprint=fp, model_sha256=sha),
        config_hash=cfg,
        status=status,
        params=json.loads(params),
        record=json.loads(record),
        created_at=created,
        version=version,
    )
