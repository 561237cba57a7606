"""``bnpo-trl replay REWARDS_FILE --normalizers group,bnpo,ebpo``: normalizers replayed over a reward log.

The log (``save_rewards: true``, :mod:`bnpo_trl.reward_log`) holds every generation batch's rewards; each
normalizer gets a fresh instance and sees the batches in order (``update=True``, so running state such as
EBPO's evolves as in training). Per step and normalizer: the signal fraction (completions with a nonzero
advantage), mean |A|, the Pearson correlation and sign agreement with the first normalizer, and its
``last_stats``. Writes ``replay.md``, ``replay.json`` and ``replay.png`` (see ``docs/replay.md``).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bnpo_trl.normalizers.base import call_normalizer
from bnpo_trl.normalizers.compare import compare_rows
from bnpo_trl.normalizers.specs import Spec, build_normalizer, parse_normalizer_specs, spec_label
from bnpo_trl.reward_log import read_reward_log

__all__ = [
    "ReplayArguments",
    "ReplayResult",
    "format_table",
    "main",
    "parse_normalizer_specs",
    "replay",
    "write_outputs",
]


def _replay_normalizer(spec: Spec, record: Mapping[str, Any]) -> Any:
    """A fresh normalizer, given the log's ``reward_ranges`` when it takes ranges (as in training)."""
    return build_normalizer(spec, reward_ranges=record.get("reward_ranges"))


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class ReplayResult:
    """``per_step[label]``: one dict per record (``step``, ``signal_fraction``, ``mean_abs_advantage``,
    ``pearson_vs_first``, ``sign_agreement_vs_first``, ``stats``; None for an undefined value);
    ``advantages[label]``: every advantage of the replay, concatenated in step order."""

    labels: list[str]
    specs: list[Spec]
    steps: list[int]
    per_step: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    advantages: dict[str, torch.Tensor] = field(default_factory=dict)

    def summary(self) -> list[dict[str, Any]]:
        """One row per normalizer: means over steps (None where a step's value was undefined)."""

        def mean(values: list[Any]) -> float | None:
            present = [v for v in values if v is not None]
            return sum(present) / len(present) if present else None

        rows = []
        for label in self.labels:
            entries = self.per_step[label]
            alpha_key, beta_key = _beta_keys(entries)
            row = {"normalizer": label, "steps": len(entries)}
            for key in (
                "signal_fraction",
                "mean_abs_advantage",
                "pearson_vs_first",
                "sign_agreement_vs_first",
            ):
                row[key] = mean([e[key] for e in entries])
            row["alpha"] = mean([e["stats"].get(alpha_key) for e in entries]) if alpha_key else None
            row["beta"] = mean([e["stats"].get(beta_key) for e in entries]) if beta_key else None
            rows.append(row)
        return rows


def _beta_keys(entries: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """The first ``last_stats`` keys ending in ``/alpha`` and ``/beta`` (None, None when absent)."""
    keys = list(dict.fromkeys(k for e in entries for k in e["stats"]))
    alpha = next((k for k in keys if k.endswith("/alpha")), None)
    beta = next((k for k in keys if k.endswith("/beta")), None)
    return (alpha, beta) if alpha and beta else (None, None)


def _unique_labels(specs: Sequence[Spec]) -> list[str]:
    labels: list[str] = []
    for spec in specs:
        label, k = spec_label(spec), 2
        while label in labels:
            label, k = f"{spec_label(spec)} #{k}", k + 1
        labels.append(label)
    return labels


def _step_metrics(row: dict[str, float]) -> dict[str, Any]:
    """A :func:`compare_rows` row under the replay's names (None for an undefined Pearson)."""
    return {
        "signal_fraction": row["signal_fraction"],
        "mean_abs_advantage": row["advantage_abs_mean"],
        "pearson_vs_first": _finite(row["pearson"]),
        "sign_agreement_vs_first": row["sign_agreement"],
    }


def _call(norm: Any, record: Mapping[str, Any]) -> torch.Tensor:
    lengths, weights = record.get("lengths"), record.get("reward_weights")  # no lengths: opo's fallback
    return call_normalizer(
        norm,
        record["rewards"],
        group_size=record["group_size"],
        data_sources=record.get("data_sources"),
        reward_weights=None if weights is None else torch.tensor(weights, dtype=torch.float32),
        update=True,
        lengths=None if lengths is None else torch.tensor(lengths, dtype=torch.float32),
    ).float()


def replay(records: Sequence[Mapping[str, Any]], specs: Sequence[Spec]) -> ReplayResult:
    """Replay every spec (a fresh normalizer each) over ``records`` (:func:`read_reward_log`), in order.

    Normalizers that take ``reward_range`` (bnpo, a composition with ``scale: bnpo``) get the first
    record's ``reward_ranges`` unless the spec sets one; those with ``uses_lengths`` get ``lengths=``.
    Pearson and sign agreement compare each normalizer's advantages with the first's.
    """
    if not specs:
        raise ValueError("No normalizers to replay.")
    if not records:
        raise ValueError("The reward log holds no records.")
    labels = _unique_labels(specs)
    norms = [_replay_normalizer(spec, records[0]) for spec in specs]
    result = ReplayResult(labels=labels, specs=list(specs), steps=[int(r["step"]) for r in records])
    chunks: dict[str, list[torch.Tensor]] = {label: [] for label in labels}
    result.per_step = {label: [] for label in labels}
    for record in records:
        advs = [_call(norm, record) for norm in norms]
        rows = compare_rows(torch.stack(advs), advs[0])
        for norm, label, adv, row in zip(norms, labels, advs, rows, strict=True):
            entry = {"step": int(record["step"]), **_step_metrics(row)}
            entry["stats"] = {k: _finite(v) for k, v in norm.last_stats.items()}
            result.per_step[label].append(entry)
            chunks[label].append(adv.cpu())
    result.advantages = {label: torch.cat(parts) for label, parts in chunks.items()}
    return result


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: ReplayResult) -> str:
    """The markdown table of :meth:`ReplayResult.summary` (``-`` where undefined)."""
    first = result.labels[0]
    lines = [
        f"| normalizer | steps | signal fraction | mean abs(A) | Pearson vs {first} | "
        f"sign agreement vs {first} | Beta alpha / beta |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.summary():
        beta = "-" if row["alpha"] is None else f"{_cell(row['alpha'])} / {_cell(row['beta'])}"
        lines.append(
            f"| {row['normalizer']} | {row['steps']} | {_cell(row['signal_fraction'])} | "
            f"{_cell(row['mean_abs_advantage'])} | {_cell(row['pearson_vs_first'])} | "
            f"{_cell(row['sign_agreement_vs_first'])} | {beta} |"
        )
    return "\n".join(lines) + "\n"


def _plot(result: ReplayResult, path: Path) -> None:
    """Three panels: advantage histograms, signal fraction per step, Beta alpha and beta per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, signal, beta) = plt.subplots(1, 3, figsize=(16, 4.5), dpi=100)
    pooled = torch.cat([result.advantages[label] for label in result.labels]).double()
    lo, hi = pooled.min().item(), pooled.max().item()
    bins = torch.linspace(lo, hi if hi > lo else lo + 1.0, 61).tolist()  # the same bins for every normalizer
    for label in result.labels:
        hist.hist(result.advantages[label].numpy(), bins=bins, histtype="step", linewidth=1.3, label=label)
        signal.plot(
            result.steps, [e["signal_fraction"] for e in result.per_step[label]], "o-", ms=3, label=label
        )
    hist.set(title="advantages (all steps)", xlabel="advantage", ylabel="completions", yscale="log")
    signal.set(title="signal fraction (A != 0)", xlabel="step", ylim=(-0.02, 1.02))
    plotted = False
    for label in result.labels:
        entries = result.per_step[label]
        alpha_key, beta_key = _beta_keys(entries)
        if alpha_key is None:
            continue
        line = beta.plot(
            result.steps, [e["stats"].get(alpha_key) for e in entries], "-", label=f"{label} alpha"
        )
        color = line[0].get_color()
        beta.plot(
            result.steps,
            [e["stats"].get(beta_key) for e in entries],
            "--",
            color=color,
            label=f"{label} beta",
        )
        plotted = True
    beta.set(title="Beta parameters", xlabel="step")
    if not plotted:
        beta.text(0.5, 0.5, "no Beta parameters", ha="center", va="center", transform=beta.transAxes)
    for ax, has_legend in ((hist, True), (signal, True), (beta, plotted)):
        ax.grid(alpha=0.3)
        if has_legend:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(result: ReplayResult, output_dir: str | Path, rewards_file: str | None = None) -> str:
    """Write ``replay.md``, ``replay.json`` and ``replay.png`` into ``output_dir``; return the table."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(result)
    source = f"Replay of `{rewards_file}`" if rewards_file else "Replay"
    (out / "replay.md").write_text(f"{source}: {len(result.steps)} steps.\n\n{table}", encoding="utf-8")
    payload = {
        "rewards_file": rewards_file,
        "normalizers": result.labels,
        "specs": result.specs,
        "steps": result.steps,
        "summary": result.summary(),
        "per_step": result.per_step,
    }
    (out / "replay.json").write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    _plot(result, out / "replay.png")
    return table


@dataclass
class ReplayArguments:
    """The options of ``bnpo-trl replay`` (the rewards file may also come first, without its flag)."""

    rewards_file: str = field(metadata={"help": "The reward log (output_dir/rewards.jsonl of a run)."})
    normalizers: str = field(
        default="group,bnpo,ebpo",
        metadata={
            "help": 'Comma-separated normalizers; an item may be a JSON mapping, e.g. \'group,{"name": "bnpo", '
            '"ema": 0.9}\'. The first is the reference of the Pearson and sign-agreement columns.'
        },
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Where replay.md/json/png go (default: the rewards file's folder/replay)."},
    )


def _positional_as_flag(argv: list[str]) -> list[str]:
    """The first argument that is neither a flag nor a flag's value -> ``--rewards_file ARG``."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            if any(a.split("=")[0] in ("--rewards_file", "--rewards-file") for a in argv):
                raise SystemExit(f"bnpo-trl replay: two rewards files, {arg!r} and --rewards_file.")
            return [*argv[:i], "--rewards_file", arg, *argv[i + 1 :]]
        i += 1 if ("=" in arg or arg in ("-h", "--help")) else 2
    return argv


def main(argv: list[str] | None = None) -> None:
    """``bnpo-trl replay REWARDS_FILE [--normalizers ...] [--output_dir DIR]``: print and write the replay."""
    from trl import TrlParser

    argv = _positional_as_flag(list(sys.argv[1:] if argv is None else argv))
    parser = TrlParser(
        (ReplayArguments,), prog="bnpo-trl replay", description="Replay normalizers over a reward log."
    )
    try:
        (args,) = parser.parse_args_and_config(args=argv)
    except ValueError as err:
        raise SystemExit(f"bnpo-trl replay: {err}") from None
    path = Path(args.rewards_file)
    if not path.is_file():
        raise SystemExit(f"bnpo-trl replay: no reward log at {path} (train with save_rewards: true).")
    try:
        specs = parse_normalizer_specs(args.normalizers)
        result = replay(read_reward_log(path), specs)
    except ValueError as err:
        raise SystemExit(f"bnpo-trl replay: {err}") from None
    output_dir = Path(args.output_dir) if args.output_dir else path.parent / "replay"
    table = write_outputs(result, output_dir, rewards_file=str(path))
    print(table, end="")
    print(f"Wrote replay.md, replay.json and replay.png into {output_dir}/.")
