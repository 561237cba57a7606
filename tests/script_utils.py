"""Helpers for the tests of ``scripts/``: import a script as a module, and shared example inputs."""

from __future__ import annotations

import importlib.util
import sys
from argparse import Namespace
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


SOURCES = ["add2", "add3", "mul"]


def learning_record(arm: str, seed: int, g: int, final: float, start: float = 0.3, steps: int = 20) -> dict:
    """One line of ``bench_learning``'s results.jsonl, made up: a straight curve from ``start`` to ``final``;
    per source ``final`` + 10, + 0 and - 10 points."""
    curve = [[0, start], [10, (start + final) / 2], [steps, final]]
    return {
        "key": f"seed{seed}/G{g}/{arm}", "arm": arm, "seed": seed, "group_size": g, "steps": steps,
        "start": start, "final": final, "start_by_source": dict.fromkeys(SOURCES, start),
        "final_by_source": {"add2": final + 0.1, "add3": final, "mul": final - 0.1}, "curve": curve,
        "curve_by_source": [[s, dict.fromkeys(SOURCES, a)] for s, a in curve],
        "auc": (start + 2 * (start + final) / 2 + final) / 4, "grad_norm": 0.5, "zero_signal": 0.25,
        "wall_seconds": 30.0, "cpu_seconds": 30.0,
    }  # fmt: skip


def learning_facts() -> dict:
    """The recipe facts ``learning_report.report`` prints in its setup line, for a small made-up run."""
    return {
        "model": "tiny:x", "dataset": "arithmetic_mix", "dataset_limit": 100, "eval_limit": 30,
        "eval_split": "test",
        "sources": {"add2": "50-99 + 50-99", "add3": "100-199 + 100-199", "mul": "10-39 * 2-9"},
        "weights": {"add2": 0.5, "add3": 0.25, "mul": 0.25}, "warmup_steps": 600, "warmup_lr": 2e-3,
        "batch": 64, "lr": 2e-4, "max_grad_norm": 1.0, "max_completion_length": 8, "rewards": ["accuracy"],
    }  # fmt: skip


def learning_args(arms: list[str], seeds: int, sizes: tuple[int, ...] = (4, 8)) -> Namespace:
    """The parsed arguments ``learning_report.report`` reads."""
    return Namespace(
        arms=arms, group_sizes=list(sizes), max_steps=20, eval_every=10, workers=2, threads=1,
        config_label="configs/bench/arithmetic_mix.yaml", seeds=list(range(seeds)),
    )  # fmt: skip


def learning_warmups(seeds: int) -> list[dict]:
    return [{"seed": s, "steps": 600, "seconds": 90.0} for s in range(seeds)]
