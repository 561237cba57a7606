"""Policy-gradient variance in training, per normalizer: the quantity of BNPO's Theorem 1, measured.

    python scripts/bench_gradient_variance.py           # quickstart recipe, seed 0, steps 0 25 50, K = 16;
                                                        # writes the bench_gradient_variance block of
                                                        # docs/benchmarks.md
    python scripts/bench_gradient_variance.py --quick   # tiny data, steps 0 2, K = 3, prints only (tests)

For a seed: the recipe's supervised warm-up (``bench_learning.warm_start``), then one RL run with the
``group`` normalizer through the real entry point, saving checkpoints at the measured steps. At each
measured step (0 = the warm start) the policy is frozen and K rollout batches are drawn from it: the same
P training prompts, G samples each (the recipe's ``num_generations``, temperature and completion length),
a different sampling seed per batch, scored with the recipe's accuracy reward (0 without an EOS when the
recipe requires one). Each completion's score ``h_i = grad sum_t log pi(y_it)`` is computed once; every
normalizer turns the same rewards into advantages and its gradient is ``sum_i A_i h_i / T``
(:mod:`bnpo_trl.gradient_variance`). Reported per normalizer: the trace of the gradients' covariance over
the K batches and the SNR ``||mean||^2 / trace``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_learning import QUICK_OVERRIDES, parse_recipe, rl_run, warm_start
from docs_section import write_section

from bnpo_trl.gradient_variance import gram_trace

ROOT = Path(__file__).resolve().parent.parent
#: BNPO with its fitted Beta and with the two special cases the paper names; the other built-ins for scale.
SPECS: list[Any] = [
    "bnpo",
    {"name": "bnpo", "alpha": 1.0, "beta": 1.0},
    {"name": "bnpo", "alpha": 1.5, "beta": 1.5},
    "group",
    "batch",
    "none",
    "rloo",
    "reinforce_pp",
    "ebpo",
    "passk",
]
BNPO_FAMILY = ["bnpo", "bnpo(alpha=1.0,beta=1.0)", "bnpo(alpha=1.5,beta=1.5)"]


def measure(
    folder: str, config: str, args: argparse.Namespace, extra: list[str]
) -> dict[str, dict[str, float]]:
    """K rollout batches from the policy in ``folder``; -> {normalizer: trace, snr, ...}."""
    from transformers import AutoModelForCausalLM

    from bnpo_trl.data import load_dataset_by_name
    from bnpo_trl.gradient_variance import GradientVarianceMeter, rollout_batch
    from bnpo_trl.models import load_plain_tokenizer
    from bnpo_trl.rewards import get_reward_funcs

    script_args, training_args, _ = parse_recipe(config, ["--output_dir", "unused", *extra])
    data = script_args.data
    rows = load_dataset_by_name(
        data.dataset_name, split=data.dataset_split, system_prompt=data.system_prompt, limit=args.prompts
    )
    tokenizer = load_plain_tokenizer(args.tokenizer_folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    prompts = [
        tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows
    ]
    answers = [r["answer"] for r in rows for _ in range(training_args.num_generations)]
    accuracy = get_reward_funcs(["accuracy"])[0]
    needs_eos = script_args.rewards.reward_requires_eos

    def reward(texts: list[str], terminated: list[bool]) -> list[float]:
        scores = accuracy([[{"role": "assistant", "content": t}] for t in texts], answer=answers)
        return [
            float(s or 0.0) if (done or not needs_eos) else 0.0
            for s, done in zip(scores, terminated, strict=True)
        ]

    meter = GradientVarianceMeter(SPECS, reward_ranges=[[0.0, 1.0]], keep=BNPO_FAMILY)
    for k in range(args.batches):
        batch = rollout_batch(
            model,
            tokenizer,
            prompts,
            reward,
            training_args.num_generations,
            seed=1000 * args.seed + k,
            max_new_tokens=training_args.max_completion_length,
            temperature=training_args.temperature,
        )
        meter.add(batch)
    out = meter.summary()
    out["_accuracy"] = {"mean_reward": float(batch.rewards.mean())}
    out["_fit"] = {k: meter.stats["bnpo"].get(f"bnpo/{k}", float("nan")) for k in ("alpha", "beta")}
    out["_lowest"] = lowest_shares({label: meter.gram(label) for label in BNPO_FAMILY}, args.seed)
    return out


def lowest_shares(grams: dict[str, torch.Tensor], seed: int, draws: int = 2000) -> dict[str, float]:
    """The share of bootstrap resamples of the K batches (the same batches for every normalizer) in which
    each normalizer has the lowest trace."""
    gen = torch.Generator().manual_seed(seed)
    k = next(iter(grams.values())).shape[0]
    wins = dict.fromkeys(grams, 0)
    for _ in range(draws):
        index = torch.randint(0, k, (k,), generator=gen)
        traces = {label: gram_trace(g, index)[0] for label, g in grams.items()}
        wins[min(traces, key=traces.get)] += 1
    return {label: n / draws for label, n in wins.items()}


def report(points: dict[int, dict[str, dict[str, float]]], args: argparse.Namespace, seconds: float) -> str:
    labels = [k for k in next(iter(points.values())) if not k.startswith("_")]
    # resampling the K batches: how often each member of the BNPO family has the lowest trace
    steps = sorted(points)
    lines = [
        f"Setup: `{args.config}`, seed {args.seed}; K = {args.batches} rollout batches per measured step, each "
        f"{args.prompts} training prompts x G samples; the policy trained with `group` between the measured "
        f"steps; {seconds:.0f} s in all.",
        "",
        "| normalizer | " + " | ".join(f"trace, step {s}" for s in steps) + " | "
        + " | ".join(f"SNR, step {s}" for s in steps) + " |",
        "|---|" + "---:|" * (2 * len(steps)),
    ]  # fmt: skip
    for label in labels:
        traces = [f"{points[s][label]['trace']:.3g}" for s in steps]
        snrs = [f"{points[s][label]['snr']:.3f}" for s in steps]
        lines.append(f"| `{label}` | " + " | ".join(traces + snrs) + " |")
    lines += [
        "",
        "Against BNPO's Theorem 1: within the family g_(alpha,beta), the fitted alpha = 1 + a/3, beta = 1 + b/3 "
        "minimise Var(g), assuming the prompts' success rates are Beta(a, b)-distributed and the score "
        "grad log pi uncorrelated with the normalized advantage; the fit uses each group's p-hat from G "
        "samples. The share of bootstrap resamples of the K batches (the same resample for all three) in which "
        "each has the lowest trace says how firm the ranking is:",
        "",
    ]
    for s in steps:
        family = {k: points[s][k]["trace"] for k in labels if k.startswith("bnpo")}
        reward = points[s]["_accuracy"]["mean_reward"]
        if not all(t > 0 for t in family.values()):  # no reward spread in any batch: no gradient to compare
            lines.append(
                f"- step {s} (mean reward {reward:.2f}): no gradient variance to compare (not judged)."
            )
            continue
        best = min(family, key=family.get)
        shares = points[s]["_lowest"]
        ranked = ", ".join(
            f"`{k}` {family[k]:.3g} (lowest in {shares[k]:.0%} of resamples)"
            for k in sorted(family, key=family.get)
        )
        verdict = "agrees" if best == "bnpo" else "does not agree"
        fit = points[s]["_fit"]
        lines.append(
            f"- step {s} (mean reward {reward:.2f}; fitted alpha {fit['alpha']:.2f}, beta {fit['beta']:.2f} on "
            f"average): traces {ranked}: the measurement {verdict}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 25, 50], help="measured RL steps")
    parser.add_argument("--batches", type=int, default=16, help="K rollout batches per measured step")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per rollout batch")
    parser.add_argument("--docs", type=Path, default=None, help="default: docs/benchmarks.md (full run)")
    parser.add_argument("--quick", action="store_true")
    args, extra = parser.parse_known_args()
    if args.quick:
        args.steps, args.batches, args.prompts = [0, 2], 3, 4
        extra = QUICK_OVERRIDES + extra
    elif args.docs is None:
        args.docs = ROOT / "docs" / "benchmarks.md"
    config = str(ROOT / args.config) if not Path(args.config).exists() else args.config
    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        warm = warm_start(config, args.seed, str(Path(tmp) / "warm_start"), extra)
        args.tokenizer_folder = warm["folder"]
        points = {0: measure(warm["folder"], config, args, extra)} if 0 in args.steps else {}
        later = sorted(s for s in args.steps if s > 0)
        if later and any(s % later[0] for s in later):
            parser.error(
                f"--steps {later}: each must be a multiple of the first (checkpoints every {later[0]})"
            )
        if later:
            group_size = parse_recipe(config, ["--output_dir", "unused", *extra])[1].num_generations
            unit = {
                "key": "group", "arm": "group", "spec": "group", "seed": args.seed, "group_size": group_size,
                "warm_start": warm["folder"], "max_steps": max(later), "eval_every": max(later),
                "run_dir": str(Path(tmp) / "rl"),
            }  # fmt: skip
            saves = ["--save_strategy", "steps", "--save_steps", str(min(later)), "--save_only_model", "true"]
            with contextlib.redirect_stderr(sys.stdout):
                rl_run(config, unit, [*extra, *saves])
            for s in later:
                points[s] = measure(str(Path(tmp) / "rl" / f"checkpoint-{s}"), config, args, extra)
    text = report(points, args, time.perf_counter() - start)
    print(text)
    if args.docs is not None:
        write_section(args.docs, "bench_gradient_variance", text)
        print(f"\nwrote the bench_gradient_variance block of {args.docs}")


if __name__ == "__main__":
    main()
