"""CI is reproducible: the README's test command installs with constraints.txt, .ci/run runs that command
verbatim, and constraints.txt pins every dependency and test dependency inside pyproject's ranges."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Run the tests") :]
    block = re.search(r"```sh\n(.+?)\n```", section, re.DOTALL)
    assert block is not None, "README: no sh block after 'Run the tests'"
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", text)
        assert match, f"constraints.txt:{number}: not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in out, f"constraints.txt:{number}: {name} pinned twice"
        out[name] = Version(match.group(2))
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for r in project["optional-dependencies"]["test"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def test_readme_test_command_installs_with_the_constraints() -> None:
    command = readme_test_command()
    assert command == "pip install -e '.[test]' -c constraints.txt && pytest -q"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_test_command() in [line.strip() for line in ci]


def test_every_dependency_is_pinned_inside_its_range() -> None:
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pinned[name]}, outside pyproject's {req.specifier}"
        )
    assert "ollama-guard" not in pinned  # the project itself is never pinned


def test_refresh_script_is_executable_shell() -> None:
    script = ROOT / "scripts" / "refresh-constraints"
    assert script.stat().st_mode & 0o111, "scripts/refresh-constraints is not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "mktemp -d" in text and "pip freeze" in text and "constraints.txt" in text
