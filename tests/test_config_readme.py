"""config/README.md lists every key of the config and cohort schemas, and no other, with the schema's default."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "config" / "README.md"
SCHEMAS = REPO / "workflow" / "schemas"


def schema_keys(props: dict, prefix: str = "") -> dict[str, dict]:
    """Dotted key -> its schema, nested objects' keys included."""
    out = {}
    for name, sub in props.items():
        out[prefix + name] = sub
        if "properties" in sub:
            out.update(schema_keys(sub["properties"], f"{prefix}{name}."))
    return out


def documented() -> dict[str, list[str]]:
    """Dotted key -> the default cells of its table rows (a cohort key may have a row per source)."""
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # | key | type | default | meaning |
        if len(cells) == 4 and re.fullmatch(r"`[^`]+`", cells[0]):
            rows.setdefault(cells[0].strip("`"), []).append(cells[2])
    return rows


def expected() -> dict[str, list[dict]]:
    config = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())
    cohort = yaml.safe_load((SCHEMAS / "cohort.schema.yaml").read_text())
    keys = {k: [s] for k, s in schema_keys(config["properties"]).items()}
    for branch in ("then", "else"):
        for k, s in schema_keys(cohort[branch]["properties"], "cohort.").items():
            keys.setdefault(k, []).append(s)
    return keys


def test_readme_names_every_schema_key_and_no_other():
    rows, keys = documented(), expected()
    assert rows, "no key table in config/README.md"
    missing = sorted(set(keys) - set(rows))
    unknown = sorted(set(rows) - set(keys))
    assert not missing, f"config/README.md lacks {missing}: add a row per key (workflow/schemas/)"
    assert not unknown, f"config/README.md names {unknown}, which no schema has"


def test_readme_defaults_are_the_schema_defaults():
    rows, keys = documented(), expected()
    for key, schemas in keys.items():
        want = {"`" + json.dumps(s["default"], ensure_ascii=False) + "`" if "default" in s else "—" for s in schemas}
        got = {cell.replace("\\|", "|") for cell in rows.get(key, [])}
        assert got <= want and got, (key, got, want)
