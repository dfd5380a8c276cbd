from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edgebench.errors import StoreError
from edgebench.store import MIGRATIONS, Provenance, Store, result_key

PROV = Provenance(build_id="b0-lcp-0.3.36-abc", host_fingerprint="f" * 16, model_sha256="a" * 64)


def test_migrations_create_exact_columns(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    cols = [r[1] for r in s.db.execute("PRAGMA table_info(results)")]
    assert cols == [
        "key",
        "stage",
        "model_sha256",
        "config_hash",
        "build_id",
        "host_fingerprint",
        "status",
        "params",
        "record",
        "created_at",
        "record_version",
    ]
    applied = [r[0] for r in s.db.execute("SELECT name FROM _migrations ORDER BY name")]
    assert applied == sorted(name for name, _ in MIGRATIONS)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.migrate() == []  # idempotent on reopen
    s.close()
    assert Store(tmp_path / "s.sqlite").migrate() == []


def test_put_is_keyed_and_idempotent(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    params = {"threads": 4, "kv": "q8_0"}
    r1 = s.put("sweep", PROV, params, {"tg": 10.0})
    r2 = s.put("sweep", PROV, dict(reversed(list(params.items()))), {"tg": 11.0})
    assert r1.key == r2.key
    assert s.count("sweep") == 1
    got = s.get(r1.key)
    assert got is not None and got.record == {"tg": 11.0} and got.provenance == PROV
    assert got.params == params


def test_key_changes_with_every_part() -> None:
    base, _ = result_key("sweep", PROV, {"t": 4})
    assert base != result_key("context", PROV, {"t": 4})[0]
    assert base != result_key("sweep", PROV, {"t": 2})[0]
    assert base != result_key("sweep", PROV.model_copy(update={"build_id": "other"}), {"t": 4})[0]
    assert base != result_key("sweep", PROV.model_copy(update={"host_fingerprint": "x"}), {"t": 4})[0]
    assert base != result_key("sweep", PROV.model_copy(update={"model_sha256": "b" * 64}), {"t": 4})[0]


def test_rows_committed_before_a_kill_9_survive(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    code = textwrap.dedent(f"""
        import os, signal
        from edgebench.store import Provenance, Store
        from pathlib import Path
        s = Store(Path({str(db)!r}))
        p = Provenance(build_id="b", host_fingerprint="h", model_sha256="m")
        for i in range(5):
            s.put("sweep", p, {{"i": i}}, {{"v": i}})
        s.db.execute("BEGIN")
        row = "'partial','sweep','m','c','b','h','ok','{{}}','{{}}','t',1"
        s.db.execute(f"INSERT INTO results VALUES ({{row}})")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = subprocess.run([sys.executable, "-c", code], check=False)
    assert res.returncode == -signal.SIGKILL
    s = Store(db)
    assert s.count("sweep") == 5
    assert s.get("partial") is None


def test_corrupt_store_is_one_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"s\.sqlite: cannot open"):
        Store(db)


def test_model_cache_by_path_size_mtime(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    s.put_model("/m.gguf", 10, 123, "abc", "m", {"name": "m"})
    assert s.cached_model("/m.gguf", 10, 123) == {"name": "m"}
    assert s.cached_model("/m.gguf", 10, 124) is None
    assert s.cached_model("/m.gguf", 11, 123) is None
    assert len(s.models()) == 1
    assert s.remove_model("/m.gguf") and s.models() == []


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    """Many processes (threads here: each with its own connection) opening one fresh store."""
    errors: list[BaseException] = []

    def open_store(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            Store(path).close()
        except BaseException as exc:
            errors.append(exc)

    for i in range(8):
        path = tmp_path / f"fresh-{i}.sqlite"
        barrier = threading.Barrier(12)
        threads = [threading.Thread(target=open_store, args=(path, barrier)) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with Store(path) as s:
            applied = [r[0] for r in s.db.execute("SELECT name FROM _migrations")]
        assert sorted(applied) == sorted(name for name, _ in MIGRATIONS)
    assert not errors, errors[0]


def test_migrations_read_what_is_applied_under_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race made deterministic: another process migrates the fresh store just before this
    one takes the write lock. Reading _migrations before the lock saw none applied and then
    failed with 'table results already exists'."""
    path = tmp_path / "s.sqlite"
    real = Store.transaction
    raced = []

    def transaction(self: Store) -> object:
        if not raced:
            raced.append(True)
            Store(path).close()  # the other process, start to finish
        return real(self)

    monkeypatch.setattr(Store, "transaction", transaction)
    with Store(path) as s:
        assert raced and s.migrate() == []
        assert s.count() == 0


def test_disk_full_is_one_store_error_and_keeps_stored_rows(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    s = Store(db)
    for i in range(3):
        s.put("sweep", PROV, {"i": i}, {"v": i})
    pages = s.db.execute("PRAGMA page_count").fetchone()[0]
    s.db.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own "disk full" (SQLITE_FULL)
    with pytest.raises(StoreError) as exc:
        s.put("sweep", PROV, {"i": 99}, {"blob": "x" * 200_000})
    msg = str(exc.value)
    assert msg.startswith(f"store {db}: ") and "full" in msg and "\n" not in msg
    s.close()
    with Store(db) as again:
        assert again.count("sweep") == 3


def test_unwritable_directory_says_which_and_how_to_move(tmp_path: Path) -> None:
    parent = tmp_path / "a-file"
    parent.write_text("")
    with pytest.raises(StoreError) as exc:
        Store(parent / "edgebench.sqlite")
    msg = str(exc.value)
    assert msg.startswith(f"store {parent / 'edgebench.sqlite'}: ") and "data_dir" in msg


def test_rows_of_an_older_record_version_are_not_reused(tmp_path: Path) -> None:
    """A stage reuses only rows written with its current record version (edgebench.stages)."""
    from edgebench.stages import STAGES

    s = Store(tmp_path / "s.sqlite")
    prov = Provenance(build_id="b", host_fingerprint="h", model_sha256="m")
    old = s.put("context", prov, {"ctx": 1}, {"x": 1})  # a row from before versions: version 1
    assert old.version == 1 and s.get(old.key) is not None and s.get(old.key).version == 1  # type: ignore[union-attr]
    new = s.put("context", prov, {"ctx": 1}, {"x": 2}, version=STAGES["context"].version)
    got = s.get(new.key)
    assert got is not None and got.version == STAGES["context"].version == 2 and got.record == {"x": 2}
    assert {st.name for st in STAGES.values()} >= {"throughput", "context", "quality", "server_check"}
