"""scripts/simulate_theory.py and scripts/bench_overhead.py: the closed forms they test against, the docs
blocks they write, and a --quick run of each end to end."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def theory() -> ModuleType:
    return load_script("simulate_theory")


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (1.0, 2.0), (2.5, 0.7), (4.0, 4.0)])
def test_closed_form_is_minimised_at_one_plus_a_over_three(theory, a, b):
    alpha, beta = 1 + a / 3, 1 + b / 3
    best = theory.closed_form(alpha, beta, a, b)
    for da, db in [(0.01, 0), (-0.01, 0), (0, 0.01), (0, -0.01), (0.01, 0.01), (-0.01, 0.01)]:
        assert theory.closed_form(alpha + da, beta + db, a, b) > best
    # Stationary point: the central-difference gradient vanishes.
    h = 1e-5
    grad_a = (theory.closed_form(alpha + h, beta, a, b) - theory.closed_form(alpha - h, beta, a, b)) / (2 * h)
    assert abs(grad_a) < 1e-6


@pytest.mark.parametrize(("a", "b"), [(0.5, 0.5), (1.0, 2.0), (3.0, 1.5)])
def test_closed_form_special_cases(theory, a, b):
    # (1, 1): f = 1, E[X^2] = E[p(1-p)]; (3/2, 3/2): E[X^2 | p] = (pi/8)^2 for every p.
    assert theory.closed_form(1.0, 1.0, a, b) == pytest.approx(theory.expected_p1mp(a, b), rel=1e-12)
    assert theory.closed_form(1.5, 1.5, a, b) == pytest.approx((math.pi / 8) ** 2, rel=1e-12)
    assert theory.closed_form((a + 3) / 2, 1.0, a, b) == math.inf


def test_fourth_moment_boundary(theory):
    assert theory.fourth_moment_finite(1 + 2.9 / 3, 1.0, 2.9, 1.0)
    assert not theory.fourth_moment_finite(1 + 3.0 / 3, 1.0, 3.0, 1.0)  # the optimum itself, a = 3
    assert not theory.fourth_moment_finite(1.5, 1.5, 1.0, 2.0)  # GRPO needs a > 1 and b > 1


def test_grid_matches_closed_form_and_beta_log_pdf(theory):
    torch.manual_seed(0)
    res = theory.bnpo_grid(1.0, 1.0, n=200_000, chunks=10, grid=5, half_width=0.05, seed=0)
    z = (res.surface - res.exact) / res.surface_se
    assert z.abs().max() < 5
    # bnpo_grid itself checks its centre against beta_log_pdf sample by sample; the REINFORCE point too:
    reinforce = res.direct["REINFORCE"].mean().item()
    assert reinforce == pytest.approx(theory.closed_form(1.0, 1.0, 1.0, 1.0), rel=0.02)


def test_ebpo_stream_baseline_and_all_fail_signal(theory):
    res = theory.ebpo_stream(0.5, 2.0, group_size=4, batches=20, prompts=32, seed=0)
    assert res.sse_ebpo.sum() < res.sse_group_mean.sum()  # shrinkage helps at G = 4
    assert res.all_fail > 0
    assert res.all_fail_nonzero["group"] == 0  # GRPO: an all-fail group has no signal
    assert res.all_fail_negative["ebpo"] == res.all_fail  # EBPO: every one is pushed down


def test_replace_block_keeps_other_blocks(theory):
    bench = load_script("bench_overhead")
    text = "# T\n\n<!-- BEGIN simulate_theory -->\nold\n<!-- END simulate_theory -->\n"
    text = bench.replace_block(text, "bench_overhead", "timings")
    text = theory.replace_block(text, "simulate_theory", "new")
    assert text == (
        "# T\n\n<!-- BEGIN simulate_theory -->\nnew\n<!-- END simulate_theory -->\n\n"
        "<!-- BEGIN bench_overhead -->\ntimings\n<!-- END bench_overhead -->\n"
    )
    assert bench.replace_block(text, "bench_overhead", "timings") == text


def run_script(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_simulate_theory_quick(tmp_path):
    out = run_script("scripts/simulate_theory.py", "--quick", "--docs-dir", str(tmp_path))
    assert "Table 1b" in out and "Measured argmin within 3 standard errors" in out
    assert "MSE ratio group/EBPO" in out and "GRPO gave 0." in out
    doc = (tmp_path / "theory.md").read_text()
    assert "<!-- BEGIN simulate_theory -->" in doc and "<!-- END simulate_theory -->" in doc
    for png in ("theory_bnpo_variance.png", "theory_ebpo_mse.png"):
        assert (tmp_path / "figures" / png).stat().st_size > 1000


@pytest.mark.slow
def test_bench_overhead_quick(tmp_path):
    doc = tmp_path / "theory.md"
    doc.write_text("# T\n\n<!-- BEGIN simulate_theory -->\nkept\n<!-- END simulate_theory -->\n")
    out = run_script("scripts/bench_overhead.py", "--quick", "--docs", str(doc))
    assert "Same rewards logged by A and B at every step: yes" in out
    assert "| median, wall |" in out and "normalizer call" in out
    text = doc.read_text()
    assert "kept" in text and "<!-- BEGIN bench_overhead -->" in text
