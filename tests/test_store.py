from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
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
        s.db.execute("INSERT INTO results VALUES ('partial','sweep','m','c','b','h','ok','{{}}','{{}}','t')")
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
