"""The package's layout rules, checked on its source: library code never imports the command line, and
no module or function grows past the size where it should be split."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bnpo_trl.cli import _with_shipped_config, shipped_configs

PACKAGE = Path(__file__).resolve().parents[1] / "bnpo_trl"
MODULES = sorted(PACKAGE.rglob("*.py"))
ENTRY_POINTS = {"cli.py", "__main__.py"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 500, 80
# Known to be too large, to be split (issue 16's evaluation package): listed so the test still guards the rest.
OVERSIZE_MODULES = set()


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_code_does_not_import_the_command_line(path):
    if path.name in ENTRY_POINTS:
        return
    imported = _imported_modules(ast.parse(path.read_text()))
    assert not imported & {"bnpo_trl.train", "bnpo_trl.cli"}, f"{path.name} imports the command line"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    if path.name in OVERSIZE_MODULES:
        pytest.xfail(f"{path.name} is still one module: to be split into a package")
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: split it into a package"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} has {length} lines"


def test_train_finds_a_shipped_recipe_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no such file here: the name is a shipped recipe
    argv, shipped = _with_shipped_config(["--config", "recipes/qwen2.5-math-1.5b/bnpo.yaml", "--seed", "1"])
    assert shipped == "recipes/qwen2.5-math-1.5b/bnpo.yaml" and argv == ["--seed", "1"]
    assert _with_shipped_config(["--config", "configs/quickstart.yaml"])[1] == "quickstart.yaml"
    (tmp_path / "quickstart.yaml").write_text("seed: 3\n")  # a file of the user's own wins
    assert _with_shipped_config(["--config", "quickstart.yaml"]) == (["--config", "quickstart.yaml"], None)
    assert "accelerate/zero2.yaml" in shipped_configs()
