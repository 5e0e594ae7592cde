"""The workflow's schemas from Python. The config defaults, read from the one place they are written:
the `default:`s of workflow/schemas/config.schema.yaml (the workflow fills them in with Snakemake's
``validate(config, schema, set_default=True)``; Python code, e.g. the CLI or a TrainConfig, can use the
same values through :func:`schema_defaults`). And the rows of a table checked against a row schema
(:func:`validate_rows`: the sample-sheet schema, for every cohort's inventory)."""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd
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


def validate_rows(table: pd.DataFrame, schema: str | os.PathLike, *, source: str) -> None:
    """Check every row of ``table`` (empty cells left out) against ``schema``, a JSON-schema YAML file of
    one row; the first bad row is a ValueError naming ``source``, the row, its file and the problem.
    The schema compiled to Python (fastjsonschema) checks a row in microseconds, where jsonschema took
    seconds of every plan of all of TCGA's 60 000 rows; jsonschema judges and explains a refused row."""
    import fastjsonschema

    text = Path(schema).read_text()
    fast = _compiled_schema(text)
    for i, row in enumerate(table.to_dict("records")):
        record = {k: v for k, v in row.items() if not (np.isscalar(v) and pd.isna(v))}
        try:
            fast(record)
            continue
        except fastjsonschema.JsonSchemaException:
            import jsonschema  # seconds to import (its format checkers): only for a row to explain

            validator = jsonschema.Draft202012Validator(yaml.safe_load(text))
            error = jsonschema.exceptions.best_match(validator.iter_errors(record))
        if error is not None:
            where = ".".join(map(str, error.absolute_path)) or "row"
            raise ValueError(f"{source}: row {i + 1} ({row.get('file_name', '?')}): {where}: {error.message}")


@functools.lru_cache(maxsize=8)
def _compiled_schema(text: str):
    """The row schema compiled once (tens of ms) for every cohort's inventory."""
    import fastjsonschema

    return fastjsonschema.compile(yaml.safe_load(text))
