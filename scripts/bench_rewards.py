"""Benchmark: the cost per item of bnpo_trl's `accuracy` reward vs TRL's `trl.rewards.accuracy_reward`, in one run.

The batches are generated offline (``reward_batches.py``: G=16 labelled completions per MATH-style problem,
with 2% pathological items by default). Batches scored:

- first-seen: new golds and answers (what the first epoch looks like); later-epoch: the same problems,
  freshly sampled completions, so golds and many (gold, answer) pairs repeat;
- each of them clean (without the pathological items) and whole; and the first-seen items of the problem
  kinds whose gold TRL parses right.

TRL's `accuracy_reward` runs in this process (its own signal-based timeouts: 10 s parse, 5 s verify), one
completion per call so that each item's time is known; a subset's TRL time is the sum of its items' times
(its CPU time pro-rated from that). `accuracy` scores each batch in one call (as GRPOTrainer calls it), on a
fresh pool and caches per family (a later-epoch batch follows its first-seen batch on the same verifier),
with 1 and with 2 worker processes; the clean families are measured ``--repeats`` times (median). Both
sides are warmed up untimed on the same answers (the workers' ``WARM_UP``); the pool's start-up is printed.
CPU time of `accuracy` = this process + its workers. The machine may be shared: the script ends with how
much CPU other processes used meanwhile.

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
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section
from reward_batches import SAME_GOLD_KINDS, G, Item, make_batch, problem

WORKER_COUNTS = (1, 2)


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
        "--timeout", type=float, default=5.0, help="accuracy's per-item wall-clock timeout (s)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each clean family (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--docs", help="also write the printed tables into this markdown file (e.g. docs/benchmarks.md)"
    )
    args = parser.parse_args()
    if args.n % G:
        parser.error(f"--n must be a multiple of {G}")
    return args


Emit = Callable[..., None]


@dataclass
class Run:
    """One batch: TRL's verdicts and per-item seconds, and `accuracy`'s (wall s, CPU s, slowest item s) per
    worker count, with its verdicts from the largest worker count."""

    label: str
    items: list[Item]
    trl_scores: list
    trl_seconds: list[float]
    trl_cpu: float
    ours: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    statuses: list[str] = field(default_factory=list)


def _warm_trl() -> None:
    """TRL's reward on the answers our workers warm up on, untimed (first-use costs, as for the workers)."""
    from bnpo_trl.rewards._worker import WARM_UP

    score_trl([Item(gold, pred, True, "warm-up") for gold, pred in WARM_UP])


def _score_family(runs: list[Run], workers: int, timeout: float, repeats: int) -> None:
    """Score ``runs`` in order on fresh pools and caches (``repeats`` times; the median wall and CPU)."""
    from bnpo_trl.rewards.accuracy import MathVerifier
    from bnpo_trl.rewards.pool import VerifierPool

    measured: list[list[tuple[float, float, float]]] = [[] for _ in runs]
    for _ in range(repeats):
        pool = VerifierPool(workers=workers, timeout=timeout)
        verifier = MathVerifier(pool)
        pool.start()  # every worker started and warmed up, untimed
        for k, run in enumerate(runs):
            pool.stats.max_request_seconds = 0.0
            statuses, wall, cpu = judge_timed(verifier, run.items)
            measured[k].append((wall, cpu, pool.stats.max_request_seconds))
            run.statuses = statuses
        pool.close()
    for run, values in zip(runs, measured, strict=True):
        run.ours[workers] = tuple(statistics.median(v[i] for v in values) for i in range(3))


def _measure(
    emit: Emit, batches: dict[str, list[Item]], frac: float, timeout: float, repeats: int
) -> list[Run]:
    """TRL on every whole batch, then `accuracy` per family and worker count (see the module docstring)."""
    from bnpo_trl.rewards.pool import VerifierPool

    _warm_trl()
    whole = {name: Run(name, items, *score_trl(items)) for name, items in batches.items()}

    def subset(label: str, base: Run, keep: Callable[[Item], bool]) -> Run:
        chosen = [k for k, item in enumerate(base.items) if keep(item)]
        seconds = [base.trl_seconds[k] for k in chosen]
        return Run(label, [base.items[k] for k in chosen], [base.trl_scores[k] for k in chosen], seconds,
                   sum(seconds) * base.trl_cpu / sum(base.trl_seconds))  # fmt: skip

    clean = lambda item: item.kind != "pathological"  # noqa: E731
    first, later = whole["first-seen"], whole["later-epoch"]
    clean_family = [subset("first-seen, clean", first, clean), subset("later-epoch, clean", later, clean)]
    kinds_family = [subset("first-seen, kinds whose gold TRL reads right", first, lambda i: i.kind in SAME_GOLD_KINDS)]  # fmt: skip
    whole_family = []
    if frac > 0:
        for run, name in ((first, "first-seen"), (later, "later-epoch")):
            run.label = f"{name}, {frac:.0%} pathological"
            whole_family.append(run)
    start = time.perf_counter()
    VerifierPool(workers=1, timeout=timeout).start()
    emit()
    emit(
        f"accuracy: one worker's start-up, warm-up included (untimed below): {time.perf_counter() - start:.2f} s"
    )
    for workers in WORKER_COUNTS:
        _score_family(clean_family, workers, timeout, repeats)
        _score_family(kinds_family, workers, timeout, repeats)
        if whole_family:
            _score_family(whole_family, workers, timeout, 1)
    return clean_family + whole_family + kinds_family


def _emit_speed_table(emit: Emit, runs: list[Run]) -> None:
    one, two = WORKER_COUNTS
    emit()
    emit(f"| batch | completions | CPU-s per 1,000 items: TRL accuracy_reward | ours, {one} / {two} workers | "
         f"CPU: TRL / ours ({two} workers) | wall s: TRL | ours, {one} / {two} workers | speed-up, {two} vs "
         f"{one} workers | speed-up vs TRL, wall ({two} workers) | slowest item s: TRL / ours |")  # fmt: skip
    emit("|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        n, trl_wall = len(run.items), sum(run.trl_seconds)
        (wall1, cpu1, _), (wall2, cpu2, slow2) = run.ours[one], run.ours[two]
        per = 1000 / n
        emit(f"| {run.label} | {n} | {run.trl_cpu * per:.2f} | {cpu1 * per:.2f} / {cpu2 * per:.2f} | "
             f"{run.trl_cpu / cpu2:.2f}x | {trl_wall:.2f} | {wall1:.2f} / {wall2:.2f} | {wall1 / wall2:.2f}x | "
             f"{trl_wall / wall2:.2f}x | {max(run.trl_seconds):.2f} / {slow2:.2f} |")  # fmt: skip
    first = runs[0]
    (wall1, cpu1, _), (wall2, cpu2, _) = first.ours[one], first.ours[two]
    emit()
    emit(f"Goals on the clean first-seen batch: CPU per item at most TRL's: {cpu2 / len(first.items) * 1000:.2f} "
         f"vs {first.trl_cpu / len(first.items) * 1000:.2f} CPU-ms ({'met' if cpu2 <= first.trl_cpu else 'NOT met'}); "
         f"wall speed-up of {two} workers over {one} at least 1.8x: {wall1 / wall2:.2f}x "
         f"({'met' if wall1 / wall2 >= 1.8 else 'NOT met'}).")  # fmt: skip


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


def _emit_agreement(emit: Emit, runs: list[Run]) -> None:
    from bnpo_trl.rewards.accuracy import STATUS_SCORES

    emit()
    emit("| batch | agree | differ | ours right | TRL right | neither | accuracy vs label: TRL / ours | "
         "ours: timeouts / unparsed gold / no answer |")  # fmt: skip
    emit("|---|---|---|---|---|---|---|---|")
    examples = []
    for run in runs:
        name, items, trl_scores, statuses = run.label, run.items, run.trl_scores, run.statuses
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
        if run is runs[0]:
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

    rng = random.Random(args.seed)
    problems = [problem(rng) for _ in range(args.n // G)]
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
         f"accuracy: timeout {args.timeout:g} s, {' and '.join(map(str, WORKER_COUNTS))} workers; clean "
         f"batches: median of {args.repeats} runs")  # fmt: skip

    import resource

    machine_start, own_start = _machine_busy_seconds(), time.process_time()
    wall_start = time.perf_counter()
    runs = _measure(emit, batches, args.pathological, args.timeout, args.repeats)
    _emit_speed_table(emit, runs)
    _emit_agreement(emit, [run for run in runs if "pathological" in run.label] or runs[:2])
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
