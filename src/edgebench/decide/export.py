"""routing.json and routing.toml: the routing decision as files a gateway (or a person) reads."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import tomli_w

from edgebench.decide.routing import SCHEMA_VERSION, Routing

__all__ = ["routing_document", "routing_schema", "routing_toml", "validate_routing", "write_routing"]


def routing_document(routing: Routing) -> dict[str, Any]:
    """The routing file's content: plain JSON types, no nulls (absent = not measured / none)."""
    from edgebench import __version__

    body = routing.model_dump(mode="json", exclude_none=True)
    return {"schema_version": SCHEMA_VERSION, "edgebench_version": __version__, **body}


def routing_schema() -> dict[str, Any]:
    text = resources.files("edgebench.decide").joinpath("routing.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_routing(doc: Any) -> list[str]:
    """Every way `doc` breaks routing.schema.json, as "path: message" lines; empty when valid."""
    validator = jsonschema.Draft202012Validator(routing_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def routing_toml(doc: dict[str, Any]) -> str:
    """The routing document as TOML (the document has no nulls, which TOML cannot express)."""
    header = "# edgebench routing table: written by `edgebench`, checked by routing.schema.json\n"
    return header + tomli_w.dumps(doc)


def write_routing(routing: Routing, out_dir: Path) -> tuple[Path, Path]:
    """routing.json and routing.toml, after checking the document against the schema."""
    doc = routing_document(routing)
    errors = validate_routing(doc)
    if errors:  # a bug in `decide`, not a user error: fail loudly
        raise ValueError(f"routing document breaks its schema: {errors[0]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    js, tm = out_dir / "routing.json", out_dir / "routing.toml"
    js.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tm.write_text(routing_toml(doc), encoding="utf-8")
    return js, tm
