"""Project-level promises: CI runs the README's test command, and the core stays import-light."""

from __future__ import annotations

import re
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from conftest import REPO_ROOT


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='([^']+)'", ci, re.M)
    assert match, ".ci/run must define TEST_COMMAND='...'"
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    assert match.group(1) in commands, "README.md must show .ci/run's TEST_COMMAND in a code block"


def test_pyproject_declares_packages_extras_and_scripts():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["name"] == "stepcredit"
    assert set(project["optional-dependencies"]) >= {"math", "vllm", "test"}
    assert set(project["scripts"]) == {"stargraph", "mathreason"}
    assert meta["tool"]["setuptools"]["packages"]["find"]["include"] == ["shared*", "stargraph*", "mathreason*"]
