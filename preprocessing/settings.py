"""The pipeline's config defaults, read from the one place they are written: the `default:`s of
workflow/schemas/config.schema.yaml (the workflow fills them in with Snakemake's
``validate(config, schema, set_default=True)``; Python code, e.g. the CLI or a TrainConfig, can use the
same values through :func:`schema_defaults`)."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _defaults(schema: dict) -> dict:
    """Nested defaults of an object schema: a property's ``default:``, with the defaults of its own
    properties filled in below it (as Snakemake's set_default does once the parent exists); a section
    without a default of its own but with defaulted properties (e.g. ``train:``) holds those."""
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        inner = _defaults(sub) if isinstance(sub, dict) else {}
        if "default" in sub:
            value = copy.deepcopy(sub["default"])
            if isinstance(value, dict):
                value = {**inner, **value}
            out[name] = value
        elif inner:
            out[name] = inner
    return out


def schema_defaults(schema_path: str | Path | None = None) -> dict:
    """The nested defaults of ``schema_path`` (default: workflow/schemas/config.schema.yaml), e.g.
    ``schema_defaults()["train"]["epochs"]``. Keys without a default (e.g. train.device) are absent.
    A fresh copy each call: changing it changes nothing else."""
    schema = yaml.safe_load(Path(schema_path or CONFIG_SCHEMA).read_text())
    return _defaults(schema)
