"""requirements.txt is the package's one list of dependencies: pyproject.toml reads it
(``dynamic = ["dependencies"]``), so ``pip install .`` and ``pip install -r requirements.txt`` ask
for the same versions; each has a floor and a cap, and the pins of constraints.txt and
constraints-floors.txt fall inside them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def requirements() -> list[Requirement]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def pins(name: str) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file's ``name==version`` lines."""
    out = {}
    for line in (REPO / name).read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            package, version = line.split("==")
            out[canonicalize_name(package)] = version.strip()
    return out


def test_requirements_txt_is_plain_requirements_setuptools_can_read():
    """No pip options (-r, -c, --index-url) and no trailing comments: setuptools reads the file
    line by line as PEP 508 requirements."""
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert not line.lstrip().startswith("-") and "#" not in line, line
            Requirement(line)  # raises on anything else


def test_pyproject_reads_its_dependencies_from_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "dependencies" not in project["project"], "a second list in pyproject.toml: keep the one in requirements.txt"
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


def test_built_metadata_requires_exactly_requirements_txt(tmp_path: Path):
    """What the build backend writes into the wheel's METADATA (PEP 517's metadata hook, as pip
    calls it) is requirements.txt, line for line: the two lists cannot disagree."""
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / "__init__.py").write_text("")
    out = tmp_path / "meta"
    out.mkdir()
    code = f"from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metadata = Parser().parsestr((out / proc.stdout.split()[-1] / "METADATA").read_text())
    built = [Requirement(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(map(str, built)) == sorted(map(str, requirements()))


@pytest.mark.parametrize("constraints", ["constraints.txt", "constraints-floors.txt"])
def test_every_requirement_has_a_floor_a_cap_and_its_pins_inside_them(constraints: str):
    pinned = pins(constraints)
    for req in requirements():
        operators = {s.operator for s in req.specifier}
        assert {">=", "<"} <= operators, f"{req}: give a floor (>=) and a cap (<)"
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in {constraints}"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{constraints} pins {req.name}=={pinned[name]}, outside {req}"


def test_torch_and_torchvision_stay_pinned_at_the_tested_versions():
    pinned = pins("constraints.txt")
    assert (pinned["torch"], pinned["torchvision"]) == ("2.14.1", "0.29.1")
