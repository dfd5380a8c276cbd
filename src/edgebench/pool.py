"""Pooled results: a bundle of stored rows with their provenance, to carry between boards.

A bundle is JSON lines: a header naming the schema, then the host and llama.cpp build records the
rows name, then the rows (sorted, so one store always exports the same bytes). Import is
idempotent: a row whose key is already stored with the same content is kept once; the same key
with other content is a conflict, reported and never overwritten; a row whose key does not match
its own content (edited or corrupted) and a bundle from a newer schema are refused, and a bad
bundle imports nothing (one transaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgebench import __version__
from edgebench.errors import EdgebenchError
from edgebench.store import Row, Store, result_key

__all__ = ["SCHEMA", "BundleError", "ImportSummary", "export_bundle", "import_bundle", "merge_bundle"]

SCHEMA = 1
KIND = "edgebench-results"


class BundleError(EdgebenchError):
    """A bundle that cannot be read or imported (the cause in one line)."""


@dataclass
class ImportSummary:
    added: int = 0
    same: int = 0
    conflicts: list[str] = field(default_factory=list)  # row keys stored with other content
    hosts_added: int = 0
    runtimes_added: int = 0


def _same(a: Row, b: Row) -> bool:
    keys = ("stage", "provenance", "config_hash", "status", "params", "record", "version")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def export_bundle(store: Store, out: Path, *, stage: str | None = None) -> int:
    """Write every row (of `stage`) with the host and build records they name; returns the row count."""
    rows = sorted(store.rows(stage), key=lambda r: r.key)
    hosts, runtimes = store.hosts(), store.runtimes()
    lines: list[dict[str, Any]] = [{"bundle": KIND, "schema": SCHEMA, "edgebench": __version__}]
    for fp in sorted({r.provenance.host_fingerprint for r in rows}):
        if fp in hosts:
            lines.append({"host": fp, "info": hosts[fp]})
    for b in sorted({r.provenance.build_id for r in rows}):
        if b in runtimes:
            lines.append({"runtime": b, "info": runtimes[b]})
    lines += [{"row": r.model_dump(mode="json")} for r in rows]
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"bundle {out}: cannot write ({e.strerror or e})") from None
    return len(rows)


def _parse(text: str, path: str) -> list[dict[str, Any]]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise BundleError(f"bundle {path}: line {n} is not JSON ({e})") from None
        if not isinstance(obj, dict):
            raise BundleError(f"bundle {path}: line {n} is not a JSON object")
        items.append(obj)
    if not items or items[0].get("bundle") != KIND:
        raise BundleError(f"bundle {path}: not an edgebench results bundle (no header line)")
    schema = items[0].get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise BundleError(f"bundle {path}: schema {schema!r} is not a version number")
    if schema > SCHEMA:
        raise BundleError(
            f"bundle {path}: schema {schema} is newer than this edgebench's ({SCHEMA}; it was written by "
            f"edgebench {items[0].get('edgebench', '?')}): upgrade edgebench to import it"
        )
    return items


def import_bundle(store: Store, path: Path) -> ImportSummary:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"bundle {path}: cannot read ({e})") from None
    return merge_bundle(store, text, str(path))


def merge_bundle(store: Store, text: str, path: str) -> ImportSummary:
    """A bundle's text (`path` names it in errors: a file, or "the pushed bundle") into `store`."""
    items = _parse(text, path)
    rows: list[Row] = []
    for n, obj in enumerate(items[1:], 2):
        if "row" not in obj:
            continue
        try:
            row = Row.model_validate(obj["row"])
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise BundleError(f"bundle {path}: line {n}: row.{where}: {err['msg']}") from None
        if result_key(row.stage, row.provenance, row.params)[0] != row.key:
            raise BundleError(
                f"bundle {path}: line {n}: row {row.key} does not match its own content (edited?)"
            )
        rows.append(row)
    summary = ImportSummary()
    with store.transaction():
        for obj in items[1:]:
            if isinstance(obj.get("host"), str) and isinstance(obj.get("info"), dict):
                summary.hosts_added += store.put_host_json(obj["host"], obj["info"])
            elif isinstance(obj.get("runtime"), str) and isinstance(obj.get("info"), dict):
                summary.runtimes_added += store.put_runtime_json(obj["runtime"], obj["info"])
        for row in rows:
            have = store.get(row.key)
            if have is None:
                store.insert_row(row)
                summary.added += 1
            elif _same(have, row):
                summary.same += 1
            else:
                summary.conflicts.append(row.key)
    return summary
