"""The packages depend one way: stages -> learning -> reporting; nothing imports upward.

* Stages (``preprocessing/``: inventory, download, tissue, tiling, features and their stores,
  omics, clinical) know nothing of the learner: no module of ``preprocessing`` imports ``healnet``.
* Learning (``healnet.model``, ``data``, ``bags``, ``survival``, ``splits``, ``train``, ``zoo``, ``baselines``)
  may read the stages' outputs through ``preprocessing`` but never imports the reporting modules.
* Reporting (``healnet.evaluate``, ``kaplan_meier``, ``headline``, ``qc``, ``attention_maps``, ``viewer``,
  ``faithfulness``, ``missing_curves``, ``summary``) may import both.
* Generators (``generators/``: the demo cohort, synthetic slides) make data in the formats the
  stages read, so they may import ``preprocessing``; no module of ``preprocessing`` or ``healnet``
  imports ``generators`` (what both sides share, such as the planted-truth file's format
  ``preprocessing.truth``, lives in the stages).

Imports are read from the source with :mod:`ast`, including those inside functions (lazy imports
count: they are dependencies all the same).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEARNING = ["model", "data", "bags", "survival", "splits", "train", "zoo", "baselines", "folds", "missing", "outputs",
            "coxnet", "attention_io", "tune", "train_config", "context", "baseline_blocks", "names", "prior"]
REPORTING = ["evaluate", "qc", "attention_maps", "viewer", "faithfulness", "attribution", "fold_model", "fold_rebuild",
             "planted_truth", "missing_curves", "summary", "kaplan_meier", "headline"]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in the file (relative imports
    resolved against its package under ``root``; ``from pkg import name`` also gives ``pkg.name``)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _is_under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "healnet"
    pkg.mkdir()
    source = pkg / "example.py"
    source.write_text("import os\n\ndef f():\n    from .qc import slides_table\n    import preprocessing.io\n")
    names = imported_modules(source, root=tmp_path)
    assert {"os", "healnet.qc", "healnet.qc.slides_table", "preprocessing.io"} <= names


@pytest.mark.parametrize("path", sorted((ROOT / "preprocessing").rglob("*.py")), ids=lambda p: p.name)
def test_stages_never_import_the_learner(path):
    upward = sorted(n for n in imported_modules(path) if _is_under(n, "healnet"))
    assert not upward, f"{path.relative_to(ROOT)} imports {upward}: preprocessing must not depend on healnet"


@pytest.mark.parametrize("module", LEARNING)
def test_learning_never_imports_reporting(module):
    path = ROOT / "healnet" / f"{module}.py"
    assert path.exists(), path
    upward = sorted(n for n in imported_modules(path)
                    if any(_is_under(n, f"healnet.{r}") for r in REPORTING))
    assert not upward, f"healnet/{module}.py imports {upward}: learning must not depend on reporting"


@pytest.mark.parametrize("path", sorted([*(ROOT / "preprocessing").rglob("*.py"), *(ROOT / "healnet").rglob("*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pipeline_never_imports_the_generators(path):
    generated = sorted(n for n in imported_modules(path) if _is_under(n, "generators"))
    assert not generated, (f"{path.relative_to(ROOT)} imports {generated}: "
                           "preprocessing and healnet must not depend on generators")


def test_readme_architecture_names_every_module():
    """The README's Architecture block names every module of the packages and every benchmark, so
    that a newcomer's map matches the tree (a module added or renamed without it fails here)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Architecture", 1)[1].split("```")[1]
    named = set(re.findall(r"\w+", block))
    modules = [p for folder in ("preprocessing", "healnet", "generators", "benchmarks")
               for p in sorted((ROOT / folder).glob("*.py")) if p.stem != "__init__"]
    assert len(modules) > 40
    missing = [str(p.relative_to(ROOT)) for p in modules if p.stem not in named]
    assert not missing, f"README Architecture does not name: {missing}"
