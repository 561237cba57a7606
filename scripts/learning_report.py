"""Tables, verdicts and the figure of ``scripts/bench_learning.py``, from its ``results.jsonl`` records alone.

Every comparison is paired by seed against ``group`` (``paired_stats``): mean difference in points, a 95%
percentile-bootstrap interval, the paired t-test p-value Holm-corrected over all the arms and group sizes
of one metric together (final accuracy and area under the curve are two families).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_stats import Comparison, compare_family, plain_words

BASELINE = "group"
METRICS = {"final": "final accuracy", "auc": "area under the learning curve"}

DOC_TEXT = """`python scripts/bench_learning.py` trains the tiny quickstart model on `arithmetic_mix` (three data
sources of different difficulty, tagged by `data_source`) with every normalizer from the same supervised
warm start per seed, with the same seed and number of RL steps, at G = 4 and G = 8 (the script's docstring
gives the protocol). This is CPU-scale evidence on a synthetic task with a 0.8M-parameter model and a
short RL budget: it says how the normalizers behave here, not which one is better on real models. The
normalizers scale advantages differently, so at the recipe's one learning rate their update sizes differ;
the learning rate is not re-tuned per normalizer. `docs/choosing-a-normalizer.md` reads these results.
"""


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 1, scale: float = 100.0) -> str:
    m, s = mean_std(values)
    return "-" if math.isnan(m) else f"{scale * m:.{digits}f} ± {scale * s:.{digits}f}"


def by_arm(runs: list[dict[str, Any]], group_size: int) -> dict[str, list[dict[str, Any]]]:
    """The runs of one group size by arm (in first-seen order), each list sorted by seed."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["group_size"] == group_size:
            arms.setdefault(run["arm"], []).append(run)
    for arm_runs in arms.values():
        arm_runs.sort(key=lambda r: r["seed"])
    seeds = {arm: [r["seed"] for r in arm_runs] for arm, arm_runs in arms.items()}
    if len({tuple(s) for s in seeds.values()}) > 1:
        raise ValueError(f"G = {group_size}: the arms ran different seeds, cannot pair them: {seeds}")
    return dict(sorted(arms.items(), key=lambda item: item[0] != BASELINE))


def comparisons(
    runs: list[dict[str, Any]], sizes: list[int], metric: str
) -> dict[int, dict[str, Comparison]]:
    groups = {g: {arm: [r[metric] for r in rs] for arm, rs in by_arm(runs, g).items()} for g in sizes}
    if any(len(next(iter(v.values()))) < 2 for v in groups.values()):
        return {g: {} for g in sizes}
    found = compare_family(groups, BASELINE)
    return {g: {c.name: c for c in found[g]} for g in sizes}


def interval(c: Comparison | None) -> str:
    if c is None:
        return "-"
    return f"{100 * c.mean:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]"


def p_cell(c: Comparison | None) -> str:
    if c is None or math.isnan(c.p_holm):
        return "-"
    mark = {"better": " ▲", "worse": " ▼"}.get(c.verdict, "")
    return ("< 0.001" if c.p_holm < 0.001 else f"{c.p_holm:.3f}") + mark


def setup_text(facts: dict[str, Any], args: Any, warmups: list[dict[str, Any]], seconds: float) -> str:
    sources = ", ".join(f"`{n}` {facts['sources'][n]} ({facts['weights'][n]:.0%})" for n in facts["sources"])
    seeds = ", ".join(str(w["seed"]) for w in warmups)
    return (
        f"Task: `{args.config_label}`: model `{facts['model']}`, dataset `{facts['dataset']}` "
        f"({facts['dataset_limit']} training prompts drawn from {sources}); held-out accuracy = greedy "
        f"decoding on {facts['eval_limit']} `{facts['eval_split']}` problems (equal counts per source) scored "
        f"by the `accuracy` reward. Seeds {seeds}; per seed one supervised warm-up of "
        f"{facts['warmup_steps']} steps (lr {facts['warmup_lr']:g}), then each of {len(args.arms)} arms trains "
        f"from it at G = {' and '.join(map(str, args.group_sizes))} for {args.max_steps} RL steps with the same "
        f"seed: {facts['batch']} completions per step ("
        + ", ".join(f"{facts['batch'] // g} prompts at G = {g}" for g in args.group_sizes)
        + f"), up to {facts['max_completion_length']} tokens, lr {facts['lr']:g}, gradients clipped at "
        f"{facts['max_grad_norm']:g}, rewards {facts['rewards']}; held-out accuracy every {args.eval_every} "
        f"steps. Every arm uses its default options. {args.workers} worker processes with {args.threads} torch "
        f"thread(s) each; {seconds / 60:.1f} min of wall time for this invocation."
    )


def warmup_table(runs: list[dict[str, Any]], warmups: list[dict[str, Any]], sources: list[str]) -> list[str]:
    lines = [
        "| seed | warm-up steps | warm-up s | held-out at RL step 0 | " + " | ".join(sources) + " |",
        "|---:|---:|---:|---:|" + "---:|" * len(sources),
    ]
    for w in warmups:
        starts = [r for r in runs if r["seed"] == w["seed"]]
        overall = {round(r["start"], 6) for r in starts}
        if len(overall) > 1:  # the same warm start must give the same step-0 accuracy in every run
            raise ValueError(f"seed {w['seed']}: runs start from different accuracies {sorted(overall)}")
        first = starts[0] if starts else {"start": math.nan, "start_by_source": {}}
        cells = [f"{100 * first['start_by_source'].get(s, math.nan):.1f}%" for s in sources]
        lines.append(
            f"| {w['seed']} | {w['steps']} | {w['seconds']:.0f} | {100 * first['start']:.1f}% | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def size_table(
    arms: dict[str, list[dict[str, Any]]], found: dict[str, dict[str, Comparison]], sources: list[str]
) -> list[str]:
    lines = [
        "| arm | final | "
        + " | ".join(sources)
        + " | AUC | final − group [95% CI] | Holm p | AUC − group [95% CI] "
        "| Holm p | grad norm | zero-signal groups | s / run |",
        "|---|---:|" + "---:|" * len(sources) + "---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, rs in arms.items():
        final, auc = found["final"].get(arm), found["auc"].get(arm)
        per_source = [fmt([r["final_by_source"].get(s, math.nan) for r in rs]) for s in sources]
        lines.append(
            f"| {arm} | {fmt([r['final'] for r in rs])} | "
            + " | ".join(per_source)
            + f" | {fmt([r['auc'] for r in rs])} "
            f"| {interval(final)} | {p_cell(final)} | {interval(auc)} | {p_cell(auc)} "
            f"| {fmt([r['grad_norm'] for r in rs], 2, 1)} | {fmt([r['zero_signal'] for r in rs], 0)}% "
            f"| {fmt([r['wall_seconds'] for r in rs], 0, 1)} |"
        )
    return lines


def verdicts(found: dict[str, dict[int, dict[str, Comparison]]], sizes: list[int]) -> list[str]:
    """Plain words: each supported difference, then what the data leave open."""
    lines = []
    for metric, label in METRICS.items():
        all_c = [(g, c) for g in sizes for c in found[metric][g].values()]
        if not all_c:
            return ["One seed: no comparison between arms."]
        shown = [(g, c) for g, c in all_c if c.verdict != "no difference shown"]
        lines.append(
            f"- **{label.capitalize()}** ({len(all_c)} comparisons with `group`, Holm-corrected together): "
            + (
                f"{len(shown)} difference(s) supported by the data."
                if shown
                else "no difference is supported by the data."
            )
        )
        lines += [f"  - G = {g}: {plain_words(c)}" for g, c in shown]
        open_ = [(g, c) for g, c in all_c if c.verdict == "no difference shown"]
        if open_:
            widest = max(open_, key=lambda gc: gc[1].ci_high - gc[1].ci_low)
            low = min(c.ci_low for _, c in open_)
            high = max(c.ci_high for _, c in open_)
            lines.append(
                f"  - Not shown for the other {len(open_)}: their intervals span {100 * low:+.1f} to "
                f"{100 * high:+.1f} points (widest: `{widest[1].name}` at G = {widest[0]}), so differences of that "
                "size can neither be claimed nor ruled out with these seeds."
            )
    return lines


def headline(
    runs: list[dict[str, Any]], found: dict[str, dict[int, dict[str, Comparison]]], sizes: list[int]
) -> str:
    parts = []
    for g in sizes:
        arms = by_arm(runs, g)
        best = max(arms, key=lambda a: mean_std([r["final"] for r in arms[a]])[0])
        text = f"G = {g}: best final accuracy `{best}` {fmt([r['final'] for r in arms[best]])}"
        if best != BASELINE:
            text += f", `group` {fmt([r['final'] for r in arms[BASELINE]])}"
        parts.append(text)
    shown = sum(
        c.verdict != "no difference shown" for m in found.values() for g in sizes for c in m[g].values()
    )
    total = sum(len(found[m][g]) for m in found for g in sizes)
    seeds = len({r["seed"] for r in runs})
    return (
        f"**In short** ({seeds} seed{'s' if seeds > 1 else ''}, %): {'; '.join(parts)}; differences to "
        f"`group` supported by the data (Holm, 5%): {shown} of {total}."
    )


def report(
    runs: list[dict[str, Any]],
    warmups: list[dict[str, Any]],
    facts: dict[str, Any],
    args: Any,
    seconds: float,
    figure: Path | None,
    docs: Path | None,
) -> str:
    sizes = list(args.group_sizes)
    sources = list(facts["sources"])
    found = {metric: comparisons(runs, sizes, metric) for metric in METRICS}
    lines = [setup_text(facts, args, warmups, seconds), "", headline(runs, found, sizes), ""]
    lines += warmup_table(runs, warmups, sources)
    for g in sizes:
        lines += ["", f"**G = {g}** (mean ± std over seeds; accuracy and AUC in %; ▲/▼: the data support a "
                  "difference to `group`, see below)", ""]  # fmt: skip
        lines += size_table(by_arm(runs, g), {m: found[m][g] for m in METRICS}, sources)
    lines += ["", "**What the data support** (paired by seed; mean difference [95% bootstrap interval]):", ""]
    lines += verdicts(found, sizes)
    lines += [
        "",
        "AUC: the mean held-out accuracy over the run (area under the evaluated curve, trapezoids, divided by "
        "the steps). Zero-signal groups: the share of groups whose advantages were all 0, mean over steps. "
        "Holm p: the paired t-test p-value, Holm-corrected over every arm and G of that metric.",
    ]
    if figure is not None:
        rel = os.path.relpath(figure, docs.parent) if docs is not None else str(figure)
        lines += ["", f"![Held-out accuracy per RL step, mean over seeds, overall and per source]({rel})"]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], args: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(args.group_sizes)
    sources = sorted({s for r in runs for s in r["final_by_source"]})
    panels = ["overall", *sources]
    fig, axes = plt.subplots(
        len(sizes), len(panels), figsize=(4 * len(panels), 3.4 * len(sizes)), squeeze=False
    )
    colors = matplotlib.colormaps["tab20"]
    for row, g in enumerate(sizes):
        for k, (arm, rs) in enumerate(by_arm(runs, g).items()):
            style = {"color": "black", "lw": 2.2} if arm == BASELINE else {"color": colors(k % 20), "lw": 1.2}
            for col, panel in enumerate(panels):
                if panel == "overall":
                    curves = [r["curve"] for r in rs]
                else:
                    curves = [[(s, by.get(panel, math.nan)) for s, by in r["curve_by_source"]] for r in rs]
                steps = [s for s, _ in curves[0]]
                acc = [100 * statistics.fmean(c[i][1] for c in curves) for i in range(len(steps))]
                axes[row][col].plot(steps, acc, label=arm, **style)
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.set_title(f"G = {g}: {panel}", fontsize=10)
            ax.set_xlabel("RL step")
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("held-out accuracy, % (mean over seeds)")
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
