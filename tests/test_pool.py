"""Pooled results: export → import into a fresh store → export again gives the same rows;
importing twice adds nothing; conflicts are reported, not overwritten; a newer schema, an edited
row or a broken line is refused in one line and imports nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_inproc import run as cli
from edgebench.pool import SCHEMA, BundleError, export_bundle, import_bundle
from edgebench.store import Provenance, Store


def _store(path: Path, host: str = "host-a", n: int = 3) -> Store:
    st = Store(path)
    st.migrate()
    st.put_host_json(host, {"fingerprint": host, "board": "rk3588", "ram_total_mib": 24000})
    st.put_runtime_json("b0-test", {"build_id": "b0-test"})
    for i in range(n):
        prov = Provenance(build_id="b0-test", host_fingerprint=host, model_sha256=f"{i:064x}")
        st.put(
            "throughput", prov, {"threads": i, "test": "tg32"}, {"avg_ts": 10.0 + i, "samples": [1.5, 2.25]}
        )
    return st


def _rows(bundle: Path) -> list[str]:
    return [ln for ln in bundle.read_text().splitlines() if '"row"' in ln]


def test_round_trip_is_exact_and_idempotent(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db")
    b1 = tmp_path / "a.jsonl"
    assert export_bundle(a, b1) == 3
    fresh = Store(tmp_path / "fresh.db")
    fresh.migrate()
    s = import_bundle(fresh, b1)
    assert (s.added, s.same, s.conflicts, s.hosts_added, s.runtimes_added) == (3, 0, [], 1, 1)
    b2 = tmp_path / "again.jsonl"
    export_bundle(fresh, b2)
    assert b2.read_text() == b1.read_text()  # the same rows, the same bytes
    again = import_bundle(fresh, b1)
    assert (again.added, again.same) == (0, 3) and fresh.count() == 3


def test_two_boards_pool_and_conflicts_are_not_overwritten(tmp_path: Path) -> None:
    a, b = _store(tmp_path / "a.db", "host-a"), _store(tmp_path / "b.db", "host-b", n=2)
    ba, bb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    export_bundle(a, ba)
    export_bundle(b, bb)
    s = import_bundle(a, bb)
    assert s.added == 2 and a.count() == 5 and set(a.hosts()) == {"host-a", "host-b"}
    # same key (same stage, provenance, params), other content: a conflict, the stored row stays
    lines = bb.read_text().splitlines()
    row = json.loads(lines[-1])
    row["row"]["record"]["avg_ts"] = 999.0
    lines[-1] = json.dumps(row)
    bad = tmp_path / "conflict.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    s = import_bundle(a, bad)
    assert s.conflicts == [row["row"]["key"]] and s.added == 0
    stored = a.get(row["row"]["key"])
    assert stored is not None and stored.record["avg_ts"] != 999.0


def _refused(store: Store, path: Path) -> str:
    before = store.count()
    with pytest.raises(BundleError) as exc:
        import_bundle(store, path)
    assert store.count() == before  # nothing imported
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_bad_bundles_are_one_line_and_import_nothing(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db")
    good = tmp_path / "a.jsonl"
    export_bundle(a, good)
    fresh = Store(tmp_path / "fresh.db")
    fresh.migrate()
    lines = good.read_text().splitlines()

    newer = tmp_path / "newer.jsonl"
    head = json.loads(lines[0]) | {"schema": SCHEMA + 1}
    newer.write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    assert "newer than this edgebench" in _refused(fresh, newer)

    edited = tmp_path / "edited.jsonl"
    row = json.loads(lines[-1])
    row["row"]["params"]["threads"] = 64  # the key no longer matches
    edited.write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    assert "does not match its own content" in _refused(fresh, edited)

    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:-1], lines[-1][:40]]) + "\n")
    assert f"line {len(lines)} is not JSON" in _refused(fresh, broken)

    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": 1}\n')
    assert "not an edgebench results bundle" in _refused(fresh, other)

    missing_field = tmp_path / "missing.jsonl"
    row = json.loads(lines[-1])
    del row["row"]["provenance"]
    missing_field.write_text("\n".join([*lines[:-1], json.dumps(row)]) + "\n")
    assert "row.provenance" in _refused(fresh, missing_field)
    assert fresh.count() == 0


def test_cli_export_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "board.jsonl"
    export_bundle(_store(tmp_path / "a.db"), src)
    r = cli(monkeypatch, "results", "import", str(src), "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)[0]["added"] == 3
    out = tmp_path / "mine.jsonl"
    r = cli(monkeypatch, "results", "export", "-o", str(out))
    assert r.code == 0 and _rows(out) == _rows(src)
    r = cli(monkeypatch, "results", "import", str(tmp_path / "nope.jsonl"))
    assert "no such file" in r.error_line()
