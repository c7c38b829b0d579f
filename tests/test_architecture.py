"""The project's layering rules, checked from the AST of every module (imports inside functions included)
and, for the lazy-import promises, by importing the entry points in a fresh interpreter.

Rules (CONTRIBUTING.md, "Architecture"):
1. ``shared`` imports no front end and nothing outside the standard library, torch and numpy (PyYAML is
   allowed where a module parses presets; none does today). One exception: ``shared.tracking`` imports the
   optional trackers (wandb, trackio) inside the functions that make their writers, and ``shared.executors``
   imports Ray when its Ray backend connects.
2. ``stargraph`` and ``mathreason`` never import each other.
3. ``stargraph`` never imports transformers, vLLM, TRL, accelerate, peft or datasets.
4. Only ``mathreason/sampling.py`` imports vLLM.
5. No module puts paths on ``sys.path``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGES = ("shared", "stargraph", "mathreason")
SHARED_ALLOWED = {"torch", "numpy", "yaml", "shared", "__future__"} | set(sys.stdlib_module_names)
LLM_STACK = {"transformers", "vllm", "trl", "accelerate", "peft", "datasets"}
VLLM_MODULES = {"mathreason.sampling"}
SHARED_OPTIONAL = {"shared.tracking": {"wandb", "trackio"}, "shared.executors": {"ray"}}  # optional extras, imported when used


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module, dotted and absolute
    where: str  # file:line

    @property
    def top(self) -> str:
        return self.target.split(".")[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[Import]:
    """Every import in ``path`` (any depth), relative ones resolved; also ``importlib.import_module("x")``
    and ``__import__("x")`` with a literal name."""
    mod = _module_name(path)
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    rel = path.relative_to(REPO_ROOT)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [Import(mod, a.name, where) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append(Import(mod, target, where))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__") and not node.args[0].value.startswith("."):
                out.append(Import(mod, node.args[0].value, where))
    return out


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


ALL = [imp for p in _sources() for imp in _imports(p)]


def _violations(pred) -> list[str]:
    return [f"{i.where}: {i.module} imports {i.target}" for i in ALL if pred(i)]


def test_the_scan_sees_every_package_and_resolves_relative_imports():
    mods = {i.module.split(".")[0] for i in ALL}
    assert mods == set(PACKAGES)
    # stargraph uses relative imports (``from .model import GPT``): they resolve inside the package.
    assert any(i.module.startswith("stargraph.") and i.target == "stargraph.model" for i in ALL)
    assert any(i.target == "vllm" for i in ALL)  # the rule below is not vacuous


def test_shared_imports_only_stdlib_torch_and_numpy():
    assert _violations(lambda i: i.module.split(".")[0] == "shared" and i.top not in SHARED_ALLOWED
                       and i.top not in SHARED_OPTIONAL.get(i.module, ())) == []


def test_front_ends_never_import_each_other():
    assert _violations(lambda i: {i.module.split(".")[0], i.top} == {"stargraph", "mathreason"}) == []


def test_stargraph_never_imports_the_llm_stack():
    assert _violations(lambda i: i.module.split(".")[0] == "stargraph" and i.top in LLM_STACK) == []


def test_only_the_sampling_module_imports_vllm():
    assert _violations(lambda i: i.top == "vllm" and i.module not in VLLM_MODULES) == []


def test_no_module_edits_sys_path():
    offenders = [str(p.relative_to(REPO_ROOT)) for p in _sources() if "sys.path" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize(
    "entry, forbidden",
    [
        ("shared", LLM_STACK | {"stargraph", "mathreason", "networkx", "matplotlib", "sympy"}),
        ("stargraph.cli, stargraph.train, stargraph.posttrain, stargraph.reproduce, stargraph.sweep, stargraph.figures, "
         "stargraph.queries, stargraph.rescore", LLM_STACK | {"mathreason"}),
        ("mathreason.sampling, mathreason.stages, mathreason.cli", {"vllm", "stargraph"}),
        ("mathreason.scaling_report", {"transformers", "vllm", "stargraph"}),
    ],
    ids=["shared", "stargraph", "mathreason-cli", "scaling-report"],
)
def test_entry_points_import_lightly(entry, forbidden):
    """The static rules hold at run time too, and lazy imports stay lazy (importing the entry points pulls
    in none of the forbidden packages)."""
    code = f"import sys, {entry}; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(forbidden)!r}))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == ""
