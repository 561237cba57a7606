"""Time every registered normalizer on one large batch, and BNPO against a per-sample Python loop.

    python scripts/bench_normalizers.py            # N = 65,536 (4,096 prompts x 16), median of 20 calls
    python scripts/bench_normalizers.py --quick    # small N, for the test suite

The loop is written like BNPO's reference implementation: one ``torch.distributions.Beta`` per sample.
It is slow, so it is timed with fewer repeats (``--loop-repeats``); its output is checked against the
vectorized normalizer before anything is printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from bnpo_trl.normalizers import available_normalizers, get_normalizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import machine_line, write_section


def bnpo_loop_reference(rewards: list[float], group_size: int) -> list[float]:
    """BNPO with Python loops: per-group success rates, moment fit, one Beta pdf per sample."""
    num_groups = len(rewards) // group_size
    p_hat = [sum(rewards[g * group_size : (g + 1) * group_size]) / group_size for g in range(num_groups)]
    mu = sum(p_hat) / num_groups
    var = sum((p - mu) ** 2 for p in p_hat) / (num_groups - 1)
    common = mu * (1 - mu) / var - 1
    alpha, beta = max(1.0, 1 + common * mu / 3), max(1.0, 1 + common * (1 - mu) / 3)
    advantages = []
    for i, r in enumerate(rewards):
        p = p_hat[i // group_size]
        dist = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(beta), validate_args=False)
        density = dist.log_prob(torch.tensor(p).clamp(1e-12, 1 - 1e-12)).exp().item()
        advantages.append((r - p) / density if density > 1e-6 else (r - p) * 1e6)
    return advantages


def time_calls(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls, in milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=4096)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--loop-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: steady timings on a busy machine; 0: torch default)",
    )
    parser.add_argument("--quick", action="store_true", help="256 prompts x 8, 3 repeats (smoke run)")
    parser.add_argument(
        "--docs", help="also write the table into this markdown file (e.g. docs/benchmarks.md)"
    )
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.group_size, args.repeats, args.loop_repeats = 256, 8, 3, 1

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    p_true = torch.distributions.Beta(torch.tensor(0.8), torch.tensor(1.2)).sample((args.prompts,))
    rewards = torch.bernoulli(p_true.repeat_interleave(args.group_size))
    sources = [f"source{g % 4}" for g in range(args.prompts) for _ in range(args.group_size)]
    n = rewards.numel()

    rows = []
    for name in available_normalizers(include_aliases=False):
        norm = get_normalizer(name)
        kwargs = {"data_sources": sources} if name == "median" else {}
        ms = time_calls(
            lambda norm=norm, kwargs=kwargs: norm(rewards, args.group_size, **kwargs), args.repeats
        )
        rows.append((name, ms))

    loop_input = rewards.tolist()
    reference = torch.tensor(bnpo_loop_reference(loop_input, args.group_size))
    vectorized = get_normalizer("bnpo")(rewards, args.group_size)
    max_diff = (reference - vectorized.double()).abs().max().item()
    if max_diff > 1e-3:
        raise SystemExit(f"loop reference and vectorized BNPO disagree by {max_diff:.3g}")
    loop_ms = time_calls(lambda: bnpo_loop_reference(loop_input, args.group_size), args.loop_repeats)
    bnpo_ms = dict(rows)["bnpo"]

    lines = [
        f"N = {n:,} ({args.prompts:,} prompts x {args.group_size}) binary rewards; median of {args.repeats} calls "
        f"(loop: {args.loop_repeats}); loop vs vectorized max |diff| {max_diff:.2e}.",
        "",
        "| normalizer | ms / call | rows / s |",
        "|---|---:|---:|",
        *[f"| {name} | {ms:.2f} | {n / ms * 1e3:,.0f} |" for name, ms in rows],
        f"| bnpo, per-sample Python loop (reference style) | {loop_ms:.1f} | {n / loop_ms * 1e3:,.0f} |",
        "",
        f"BNPO loop / vectorized: **{loop_ms / bnpo_ms:.0f}x** (goal >= 50x)",
    ]
    print(f"# bench_normalizers ({machine_line()})")
    print("\n".join(lines))
    if args.docs:
        write_section(args.docs, "bench_normalizers", "\n".join(lines))


if __name__ == "__main__":
    main()
