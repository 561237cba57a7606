"""Benchmark: bnpo_trl's `accuracy` reward vs TRL's `trl.rewards.accuracy_reward`, measured in one run.

The script writes its own batches (nothing is downloaded): G=16 completions for each of N/16 MATH-style
problems whose golds are stored as datasets store them (raw LaTeX: integers, fractions, radicals,
intervals, decimals, lists of roots, polynomials, multiple-choice letters, degrees, percents, large
numbers). Completions are correct answers in several equivalent forms, plausible wrong answers, long
reasoning before the box, several boxes, answers without a box ("The final answer is $x$"), truncated
completions without an answer, and 2% pathological items (nested exponents, 10^5-character garbage with and
without a box, 5,000 nested braces). Every completion carries the label the generator meant (correct or
not), so disagreements between the two verifiers can be attributed.

Two batches are scored:

- first-seen: new golds and answers (what the first epoch looks like);
- later-epoch: the same problems, freshly sampled completions, so golds and many (gold, answer) pairs repeat.

Each batch is scored by TRL's `accuracy_reward` (main thread, its own signal-based timeouts: 10 s parse,
5 s verify), one completion per call so that each item's time is known, and by `accuracy` in one call (as
GRPOTrainer calls it). The pool is started and warmed up before timing; its start-up time is printed.
Rows for subsets (without the pathological items; only the problem kinds whose gold TRL parses right)
score the subset again with `accuracy` on a fresh pool and sum TRL's per-item times (TRL's CPU time for a
subset is pro-rated from its wall time). CPU time of `accuracy` = this process + its workers.
The machine may be shared: the script ends with how much CPU other processes used meanwhile.

    python scripts/bench_rewards.py            # N = 4096 per batch (several minutes: TRL spends 5 s on
                                               # every nested exponent)
    python scripts/bench_rewards.py --n 1024   # quicker
    python scripts/bench_rewards.py --docs docs/benchmarks.md   # also write the bench_rewards block

Everything the script prints to stdout is also, with ``--docs PATH``, the body of the ``bench_rewards`` block
of that markdown file (``scripts/docs_section.py``), so the two never differ; it is written as markdown.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section

G = 16
#: Problem kinds whose raw-LaTeX gold math-verify's default parse (TRL) reads correctly.
SAME_GOLD_KINDS = ("int", "neg", "frac", "decimal", "degrees", "percent")


@dataclass
class Item:
    gold: str
    text: str
    label: bool  # what the generator meant: is this completion's final answer correct?
    kind: str  # problem kind, or "pathological"


def _problem(rng: random.Random) -> tuple[str, str, list[str], list[str]]:
    """(kind, gold as stored in a dataset, correct answer forms, wrong answers)."""
    kind = rng.choice(
        ["int", "int", "int", "neg", "frac", "frac", "radical", "interval", "decimal", "roots", "poly", "choice",
         "degrees", "percent", "big"]
    )  # fmt: skip
    if kind == "int":
        n = rng.randint(2, 999)
        return kind, str(n), [str(n)], [str(n + 1), str(n - 1), str(2 * n), str(-n)]
    if kind == "neg":
        n = rng.randint(1, 99)
        return kind, f"-{n}", [f"-{n}"], [str(n), f"-{n + 1}"]
    if kind == "frac":
        b = rng.randint(2, 16)
        a = rng.choice([k for k in range(1, 3 * b) if math.gcd(k, b) == 1])
        forms = [rf"\frac{{{a}}}{{{b}}}", rf"\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"]
        if Fraction(a, b).denominator in (2, 4, 5, 8, 10, 16):
            forms.append(str(float(Fraction(a, b))))
        return (
            kind,
            rf"\frac{{{a}}}{{{b}}}",
            forms,
            [rf"\frac{{{b}}}{{{a}}}", rf"\frac{{{a + 1}}}{{{b}}}", f"-{a}/{b}"],
        )
    if kind == "radical":
        a, b = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7, 10, 11])
        a = a if a != b else a + 1  # the wrong answer b\sqrt{a} must differ from a\sqrt{b}
        forms = [rf"{a}\sqrt{{{b}}}", rf"\sqrt{{{a * a * b}}}", rf"{a} \cdot \sqrt{{{b}}}"]
        return (
            kind,
            rf"{a}\sqrt{{{b}}}",
            forms,
            [str(a), rf"\sqrt{{{b}}}", rf"{a}\sqrt{{{b + 1}}}", rf"{b}\sqrt{{{a}}}"],
        )
    if kind == "interval":
        a = rng.randint(-9, 5)
        b = a + rng.randint(1, 9)
        return kind, f"[{a}, {b})", [f"[{a},{b})", f"[{a}, {b})"], [f"({a},{b})", f"[{a},{b}]", str(b)]
    if kind == "decimal":
        n = rng.randint(1, 99) + 0.5
        frac = Fraction(n)
        return (
            kind,
            str(n),
            [str(n), rf"\frac{{{frac.numerator}}}{{{frac.denominator}}}"],
            [str(n - 1), str(n + 0.25)],
        )
    if kind == "roots":
        a = rng.randint(-9, -1)
        b = rng.choice([k for k in range(1, 10) if k != -a])  # {-a, -b} must differ from {a, b}
        return kind, f"{a}, {b}", [f"{a}, {b}", f"{b}, {a}", rf"\{{{a}, {b}\}}"], [str(b), f"{-a}, {-b}"]
    if kind == "poly":
        a = rng.randint(1, 9)
        return (
            kind,
            f"x^2+{2 * a}x+{a * a}",
            [f"(x+{a})^2", f"x^2 + {2 * a}x + {a * a}"],
            [f"(x-{a})^2", f"x^2+{a * a}"],
        )
    if kind == "choice":
        letter = rng.choice("ABCDE")
        others = [c for c in "ABCDE" if c != letter]
        return kind, rf"\text{{({letter})}}", [letter, rf"\text{{({letter})}}", f"({letter})"], others[:2]
    if kind == "degrees":
        n = rng.choice([30, 45, 60, 72, 120, 135])
        return kind, rf"{n}^\circ", [str(n), rf"{n}^\circ", rf"{n}^{{\circ}}"], [str(180 - n), str(n + 10)]
    if kind == "percent":
        n = rng.randint(5, 95)
        return kind, rf"{n}\%", [rf"{n}\%", str(n)], [rf"{100 - n}\%", str(n + 1)]
    n = rng.randint(1000, 999_999)  # big
    return (
        kind,
        f"{n:,}".replace(",", "{,}"),
        [str(n), f"{n:,}", f"{n:,}".replace(",", r"\,")],
        [str(n + 10), str(n // 10)],
    )


_WORDS = [
    "we",
    "let",
    "then",
    "so",
    "thus",
    "note",
    "that",
    "compute",
    "substitute",
    "simplify",
    "check",
    "the",
    "value",
    "of",
    "and",
    "since",
    "hence",
]


def _reasoning(rng: random.Random, words: int) -> str:
    parts = []
    for i in range(words // 12):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        parts.append(
            " ".join(rng.choices(_WORDS, k=9))
            + f" ${a} + {b} = {a + b}$, and $x_{{{i}}} = \\frac{{{a}}}{{{b}}}$."
        )
    return " ".join(parts)


def _completion(rng: random.Random, answer: str | None, decoy: str) -> str:
    if answer is None:  # truncated: the model ran out of tokens before answering
        return _reasoning(rng, rng.randint(100, 600))
    style = rng.random()
    if style < 0.55:
        return f"{_reasoning(rng, rng.randint(20, 80))} Therefore the answer is $\\boxed{{{answer}}}$."
    if style < 0.80:
        return f"{_reasoning(rng, rng.randint(300, 1500))}\n\nThe final answer is $\\boxed{{{answer}}}$."
    if style < 0.90:
        return f"First attempt gives $\\boxed{{{decoy}}}$. {_reasoning(rng, 40)} Correcting this: $\\boxed{{{answer}}}$."
    return f"{_reasoning(rng, rng.randint(20, 80))} The final answer is ${answer}$."


def _pathological(rng: random.Random, i: int) -> str:
    variant = i % 6
    if variant in (0, 1):
        a, b, c, d = (rng.randint(5, 9) for _ in range(4))
        return rf"After a long computation, the answer is $\boxed{{{a}^{{{b}^{{{c}^{{{d}}}}}}}}}$."
    if variant in (2, 3):
        return "".join(
            rng.choices(string.ascii_letters + string.digits + string.punctuation + " ", k=100_000)
        )
    if variant == 4:
        junk = "".join(rng.choices("x+-*^()0123456789 ", k=100_000))
        return rf"\boxed{{{junk}}}"
    if rng.random() < 0.5:
        return r"\boxed{" + "{" * 5000 + "1" + "}" * 5000 + "}"
    return rf"\boxed{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}^{{{rng.randint(2, 9)}}}}}}}}}"


def make_batch(
    problems: list[tuple[str, str, list[str], list[str]]], seed: int, frac_pathological: float
) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for kind, gold, forms, wrongs in problems:
        p_correct = rng.random()
        favourite = rng.choice(forms)
        for _ in range(G):
            r = rng.random()
            if r < 0.08:
                items.append(Item(gold, _completion(rng, None, ""), False, kind))
            elif r < 0.08 + 0.92 * p_correct:
                answer = favourite if rng.random() < 0.7 else rng.choice(forms)
                items.append(Item(gold, _completion(rng, answer, rng.choice(wrongs)), True, kind))
            else:
                answer = wrongs[0] if rng.random() < 0.6 else rng.choice(wrongs)
                items.append(Item(gold, _completion(rng, answer, favourite), False, kind))
    n_bad = round(frac_pathological * len(items))
    for j, index in enumerate(rng.sample(range(len(items)), n_bad)):
        items[index] = Item(items[index].gold, _pathological(rng, j), False, "pathological")
    return items


def score_trl(items: list[Item]) -> tuple[list[float | None], list[float], float]:
    """TRL's verdicts, each item's wall-clock seconds, and the CPU seconds used."""
    from trl.rewards import accuracy_reward

    scores, seconds = [], []
    cpu = time.process_time()
    for item in items:
        start = time.perf_counter()
        scores.append(accuracy_reward([[{"role": "assistant", "content": item.text}]], [item.gold])[0])
        seconds.append(time.perf_counter() - start)
    return scores, seconds, time.process_time() - cpu


def _worker_cpu(pool) -> dict[int, float]:
    """CPU seconds used so far by each live worker of the pool (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for worker in pool._workers:
        try:
            with open(f"/proc/{worker.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[worker.proc.pid] = (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            pass
    return out


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used since boot (Linux /proc/stat), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def judge_timed(verifier, items: list[Item]) -> tuple[list[str], float, float]:
    """Our verdicts, wall-clock seconds, and CPU seconds of this process plus its workers. Workers killed
    during the batch are counted with their whole lifetime's CPU (an overestimate)."""
    import resource

    before, children = _worker_cpu(verifier.pool), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, start = time.process_time(), time.perf_counter()
    statuses = verifier.judge([i.gold for i in items], [i.text for i in items])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    after, children_after = _worker_cpu(verifier.pool), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu += sum(t - before.get(pid, 0.0) for pid, t in after.items())
    reaped = (children_after.ru_utime + children_after.ru_stime) - (children.ru_utime + children.ru_stime)
    return statuses, wall, cpu + reaped


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4096, help="completions per batch (a multiple of 16)")
    parser.add_argument(
        "--pathological", type=float, default=0.02, help="fraction of pathological completions"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="accuracy's worker processes (default min(2, CPUs))"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="accuracy's per-item wall-clock timeout (s)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--docs", help="also write the printed tables into this markdown file (e.g. docs/benchmarks.md)"
    )
    args = parser.parse_args()
    if args.n % G:
        parser.error(f"--n must be a multiple of {G}")
    return args


Emit = Callable[..., None]


def _measure(emit: Emit, batches: dict[str, list[Item]], workers: int, timeout: float) -> tuple[list, Any]:
    """Score every batch with TRL and with `accuracy`, then the subsets on fresh pools.

    Returns the runs ``(label, items, trl scores, trl seconds per item, trl cpu, our statuses, our wall,
    our cpu, our slowest item)`` and the main pool (still open: its stats are printed at the end).
    """
    from bnpo_trl.rewards.accuracy import MathVerifier
    from bnpo_trl.rewards.pool import VerifierPool

    score_trl([Item("1", r"\boxed{1}", True, "warm-up")])  # imports and regex compilation, untimed
    pool = VerifierPool(workers=workers, timeout=timeout)
    verifier = MathVerifier(pool)
    start = time.perf_counter()
    verifier.judge(["12345678"], [r"\boxed{12345678}"])
    emit()
    emit(f"accuracy pool start-up (untimed below): {time.perf_counter() - start:.2f} s")

    runs = []
    for name, items in batches.items():
        trl_scores, trl_seconds, trl_cpu = score_trl(items)
        pool.stats.max_request_seconds = 0.0
        statuses, wall, cpu = judge_timed(verifier, items)
        runs.append((name, items, trl_scores, trl_seconds, trl_cpu, statuses, wall, cpu, pool.stats.max_request_seconds))  # fmt: skip

    # Subsets scored again by `accuracy` on fresh pools and caches (one pool per subset family, so the
    # later-epoch subset finds the caches its first-seen subset left); TRL's per-item times are summed.
    def subset_runs(family: list[tuple[str, int, object]]) -> None:
        sub_pool = VerifierPool(workers=workers, timeout=timeout)
        sub_verifier = MathVerifier(sub_pool)
        sub_verifier.judge(["12345678"], [r"\boxed{12345678}"])
        for label, run_index, keep in family:
            _, items, trl_scores, trl_seconds, trl_cpu, *_ = runs[run_index]
            chosen = [k for k, i in enumerate(items) if keep(i)]
            seconds = [trl_seconds[k] for k in chosen]
            sub_pool.stats.max_request_seconds = 0.0
            statuses, wall, cpu = judge_timed(sub_verifier, [items[k] for k in chosen])
            runs.append((label, [items[k] for k in chosen], [trl_scores[k] for k in chosen], seconds,
                         sum(seconds) * trl_cpu / sum(trl_seconds), statuses, wall, cpu,
                         sub_pool.stats.max_request_seconds))  # fmt: skip
        sub_pool.close()

    normal = lambda i: i.kind != "pathological"  # noqa: E731
    subset_runs([("first-seen without pathological items", 0, normal), ("later-epoch without pathological items", 1, normal)])  # fmt: skip
    subset_runs([("first-seen, kinds whose gold TRL reads right", 0, lambda i: i.kind in SAME_GOLD_KINDS)])
    return runs, pool


def _emit_speed_table(emit: Emit, runs: list, workers: int, timeout: float) -> None:
    emit()
    emit("| batch | completions | TRL accuracy_reward: items/s (wall s, CPU s) | bnpo_trl accuracy: items/s "
         "(wall s, CPU s) | speed-up, wall | CPU-time ratio | slowest item TRL / ours (s) | "
         "bound (N/workers)*timeout |")  # fmt: skip
    emit("|---|---|---|---|---|---|---|---|")
    for name, items, _, trl_seconds, trl_cpu, _, wall, cpu, ours_max in runs:
        n, trl_wall = len(items), sum(trl_seconds)
        bound = n / workers * timeout
        emit(f"| {name} | {n} | {n / trl_wall:.0f} ({trl_wall:.1f}, {trl_cpu:.1f}) | {n / wall:.0f} ({wall:.1f}, {cpu:.1f}) | "
             f"{trl_wall / wall:.2f}x | {trl_cpu / cpu:.2f}x | {max(trl_seconds):.2f} / {ours_max:.2f} | "
             f"{bound:.0f} s {'ok' if wall <= bound else 'EXCEEDED'} |")  # fmt: skip


def _disagreement_examples(items: list[Item], trl_scores: list, ours: list, statuses: list[str]) -> list[str]:
    """One example per problem kind where the verifiers differ, then up to 5 where ours != the label."""
    examples = []
    differ = [k for k in range(len(items)) if bool(trl_scores[k]) != bool(ours[k])]
    by_kind: dict[str, list[int]] = {}
    for k in differ:
        by_kind.setdefault(items[k].kind, []).append(k)
    for kind, ks in sorted(by_kind.items()):
        k = ks[0]
        answer = items[k].text[-50:].replace("\n", " ")
        examples.append(f"  {kind:12s} {len(ks):4d} differ, e.g. gold {items[k].gold!r}, completion ...{answer!r}: "
                        f"label {int(items[k].label)}, TRL {trl_scores[k]}, ours {ours[k]}")  # fmt: skip
    wrong = [k for k in range(len(items)) if bool(ours[k]) != items[k].label]
    for k in wrong[:5]:
        examples.append(
            f"  ours != label: gold {items[k].gold!r}, ...{items[k].text[-50:]!r}, ours {statuses[k]}"
        )
    return examples


def _emit_agreement(emit: Emit, runs: list) -> None:
    from bnpo_trl.rewards.accuracy import STATUS_SCORES

    emit()
    emit("| batch | agree | differ | ours right | TRL right | neither | accuracy vs label: TRL / ours | "
         "ours: timeouts / unparsed gold / no answer |")  # fmt: skip
    emit("|---|---|---|---|---|---|---|---|")
    examples = []
    for name, items, trl_scores, _, _, statuses, *_ in runs[:2]:
        ours = [STATUS_SCORES[s] for s in statuses]
        trl_ok = [bool(s) == i.label for i, s in zip(items, trl_scores, strict=True)]
        ours_ok = [bool(s) == i.label for i, s in zip(items, ours, strict=True)]
        differ = [k for k in range(len(items)) if bool(trl_scores[k]) != bool(ours[k])]
        ours_right = sum(ours_ok[k] for k in differ)
        trl_right = sum(trl_ok[k] for k in differ)
        counts = [statuses.count(s) for s in ("timeout", "unparsed_gold", "no_answer")]
        emit(f"| {name} | {len(items) - len(differ)} | {len(differ)} | {ours_right} | {trl_right} | "
             f"{len(differ) - ours_right - trl_right} | {sum(trl_ok) / len(items):.3f} / {sum(ours_ok) / len(items):.3f} | "
             f"{counts[0]} / {counts[1]} / {counts[2]} |")  # fmt: skip
        if name == "first-seen":
            examples = _disagreement_examples(items, trl_scores, ours, statuses)
    emit()
    emit("Disagreements on the first-seen batch, by problem kind (one example each):")
    emit()
    emit("```text")  # the examples hold raw LaTeX and reprs: verbatim in markdown
    for line in examples or ["  none"]:
        emit(line)
    emit("```")


def main() -> None:
    args = _parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every timeout and failed parse

    lines: list[str] = []  # everything printed, in order: the body of the docs block

    def emit(line: str = "") -> None:
        """Print one line (as it is measured) and keep it for the docs block."""
        lines.append(line)
        print(line, flush=True)

    from bnpo_trl.rewards.pool import default_workers

    workers = args.workers or default_workers()
    rng = random.Random(args.seed)
    problems = [_problem(rng) for _ in range(args.n // G)]
    batches = {
        "first-seen": make_batch(problems, args.seed + 1, args.pathological),
        "later-epoch": make_batch(problems, args.seed + 2, args.pathological),
    }
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    emit(f"python {sys.version.split()[0]}, {cpus} usable CPUs, load average {load:.2f} before the run")
    emit()
    emit(f"N = {args.n} completions per batch ({len(problems)} problems x {G}), "
         f"{sum(i.kind == 'pathological' for i in batches['first-seen'])} pathological per batch; "
         f"accuracy: {workers} workers, timeout {args.timeout:g} s")  # fmt: skip

    import resource

    machine_start, own_start = _machine_busy_seconds(), time.process_time()
    wall_start = time.perf_counter()
    runs, pool = _measure(emit, batches, workers, args.timeout)
    _emit_speed_table(emit, runs, workers, args.timeout)
    _emit_agreement(emit, runs)
    pool.close()
    emit()
    emit(f"pool: {pool.stats}")
    machine_end = _machine_busy_seconds()
    if machine_start is not None and machine_end is not None:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = time.process_time() - own_start + children.ru_utime + children.ru_stime
        elapsed = time.perf_counter() - wall_start
        others = max(0.0, machine_end - machine_start - own)
        emit()
        emit(f"other processes used {others:.0f} CPU-seconds of the {cpus * elapsed:.0f} available during the "
             f"{elapsed:.0f} s run (this benchmark: {own:.0f}); figures above are for a machine that busy")  # fmt: skip

    if args.docs:
        write_section(args.docs, "bench_rewards", "\n".join(lines))
        print(f"wrote the bench_rewards block of {args.docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
