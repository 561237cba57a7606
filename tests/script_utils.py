"""Helpers for the tests of ``scripts/``: import a script as a module, and shared example inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (registered in ``sys.modules``: dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bench_learning_facts() -> dict:
    """The recipe facts ``bench_learning.report`` prints in its setup line, for a small made-up run."""
    return {
        "model": "tiny:x", "dataset_limit": 10, "eval_limit": 10, "eval_split": "test", "warmup": True,
        "warmup_target": 0.2, "warmup_seconds": 60, "batch": 16, "group": 8, "lr": 1e-3, "max_grad_norm": 1.0,
        "max_completion_length": 8, "rewards": ["accuracy"], "requires_eos": True,
    }  # fmt: skip
