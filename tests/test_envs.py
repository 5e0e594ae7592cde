"""envs/*.yaml (the rules' `conda:` environments) list the same packages and version bounds as
pyproject.toml's [project] dependencies, whether a package comes from conda or from the pip section."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
# conda-forge name -> PyPI name, where they differ
CONDA_TO_PYPI = {"pytorch": "torch", "openslide": "openslide-bin", "py-opencv": "opencv-python"}
NOT_PACKAGES = {"python", "pip"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def split_spec(spec: str) -> tuple[str, str]:
    """'tiatoolbox>=2.1,<2.2' -> ('tiatoolbox', '<2.2,>=2.1'); conda's 'pytorch >=2.4' and '=2.4' too."""
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*?)\s*$", spec)
    assert m, spec
    name, bounds = m.groups()
    bounds = bounds.split("#")[0].replace(" ", "")
    if re.fullmatch(r"=[^=].*", bounds):  # conda's '=1.2' means '==1.2.*'
        bounds = f"=={bounds[1:]}.*"
    return norm(name), ",".join(sorted(b for b in bounds.split(",") if b))


def env_packages(path: Path) -> dict[str, str]:
    env = yaml.safe_load(path.read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep.get("pip", []):
                if spec.startswith("-"):  # -e .. (the project itself), --index-url ...
                    continue
                name, bounds = split_spec(spec)
                out[name] = bounds
        else:
            name, bounds = split_spec(dep.split("::")[-1])
            if name not in NOT_PACKAGES:
                out[norm(CONDA_TO_PYPI.get(name, name))] = bounds
    return out


def project_packages() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(split_spec(d.split(";")[0]) for d in deps)


def test_there_is_an_environment_file():
    assert ENV_FILES, "envs/ has no environment file"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_environment_matches_pyproject(path):
    env, project = env_packages(path), project_packages()
    missing = sorted(set(project) - set(env))
    extra = sorted(set(env) - set(project))
    bounds = {n: (project[n], env[n]) for n in set(project) & set(env) if project[n] != env[n]}
    assert not missing, f"{path.name} lacks {missing} (in pyproject.toml)"
    assert not extra, f"{path.name} has {extra}, which pyproject.toml does not list"
    assert not bounds, f"version bounds differ (pyproject, {path.name}): {bounds}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_environment_python_matches_requires_python(path):
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    deps = yaml.safe_load(path.read_text())["dependencies"]
    pythons = [split_spec(d)[1] for d in deps if isinstance(d, str) and split_spec(d)[0] == "python"]
    assert pythons == [requires.replace(" ", "")], (pythons, requires)


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_environment_installs_the_project(path):
    """workflow/scripts import `preprocessing` and `healnet`: the env must install this repository."""
    pip = [s for d in yaml.safe_load(path.read_text())["dependencies"] if isinstance(d, dict) for s in d.get("pip", [])]
    local = [s.split(None, 1)[1] for s in pip if s.startswith("-e ")]
    assert local and all((path.parent / p / "pyproject.toml").is_file() for p in local), pip


def test_the_checker_sees_a_difference(tmp_path):
    """The comparison can fail: a changed bound, a missing and an extra package are all reported."""
    env = yaml.safe_load(ENV_FILES[0].read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    pip[:] = [("torch>=1.0" if s.startswith("torch") else s) for s in pip if not s.startswith("h5py")] + ["numba"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(env))
    got, project = env_packages(bad), project_packages()
    assert "h5py" in set(project) - set(got) and "numba" in set(got) - set(project)
    assert got["torch"] != project["torch"]
