"""What a run reports: its metadata (sampling, seeds, versions, ...) and the markdown tables printed by
``bnpo-trl eval`` (one model, or a model next to its baseline)."""

from __future__ import annotations

import datetime
import hashlib
import platform
from collections.abc import Mapping
from typing import Any

from bnpo_trl.evaluation.benchmarks import Benchmark, system_prompt_of

__all__ = ["format_comparison", "format_table", "run_metadata", "versions"]


def versions(backend: str) -> dict[str, str]:
    """The versions of Python and of the packages that decide the numbers (vLLM for its backend)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    names = ["bnpo-trl", "torch", "transformers", "trl", "datasets", "math-verify"]
    if backend == "vllm":
        names.append("vllm")
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def run_metadata(
    *,
    model_name: str,
    backend: Any,
    sampling: Mapping[str, Any],
    seed: int,
    ks: list[int],
    limit: int | None,
    benchmarks: Mapping[str, Benchmark],
    tokenizer: Any,
    chat_template_kwargs: Mapping[str, Any] | None,
    reward_name: str,
    n_bootstrap: int,
    seconds: float,
) -> dict[str, Any]:
    """The ``metadata`` of a report (see ``docs/evaluation.md``; ``command`` is added by the CLI)."""
    return {
        "model": model_name,
        "backend": backend.name,
        "device": backend.device(),
        "sampling": dict(sampling),
        "seed": seed,
        "ks": ks,
        "limit": limit,
        "system_prompt": system_prompt_of(benchmarks),
        "chat_template_sha256": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest(),
        "chat_template_kwargs": dict(chat_template_kwargs or {}),
        "reward": reward_name,
        "ci": {
            "method": "percentile bootstrap over problems",
            "level": 0.95,
            "resamples": n_bootstrap,
            "seed": seed,
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(backend.name),
        "seconds": round(seconds, 3),
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def format_table(report: Mapping[str, Any]) -> str:
    """A markdown table of one model's results (percentages; pass@1 with its 95% CI)."""
    results = report["results"]
    ks = report["metadata"]["ks"]
    extra = [k for k in ks if k != 1]
    has_maj = any(r.get("maj@k") for r in results.values())
    header = ["benchmark", "problems", "n", "pass@1 (95% CI)", *[f"pass@{k}" for k in extra]]
    header += ["maj@n (95% CI)"] * has_maj + ["mean length", "no answer %", "truncated %"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, r in results.items():
        lo, hi = r["ci95"]["pass@1"]
        cells = [name, str(r["n_problems"]), str(r["n_samples"])]
        cells.append(f"{_pct(r['pass@k']['pass@1'])} [{_pct(lo)}, {_pct(hi)}]")
        cells += [_pct(r["pass@k"].get(f"pass@{k}")) for k in extra]
        if has_maj:
            maj = next(iter(r.get("maj@k", {}).items()), None)
            cells.append(
                f"{_pct(maj[1])} [{_pct(r['ci95'][maj[0]][0])}, {_pct(r['ci95'][maj[0]][1])}]" if maj else ""
            )
        cells += [f"{r['mean_length']:.0f}", _pct(r["no_answer_rate"]), _pct(r["truncated_rate"])]
        lines.append("| " + " | ".join(cells) + " |")
    average = report.get("average") or {}
    if average:
        cells = ["average", "", "", _pct(average.get("pass@1"))]
        cells += [_pct(average.get(f"pass@{k}")) for k in extra] + [""] * (3 + has_maj)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparison_rows(name: str, ours: Mapping, theirs: Mapping, diff: Mapping) -> list[str]:
    lines = []
    for key, value in ours["pass@k"].items():
        if key not in diff["pass@k"]:
            continue
        d = diff["pass@k"][key]
        ci = f" [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" if d["ci95"] else ""
        row = [name, key, _pct(value), _pct(theirs["pass@k"][key]), f"{100 * d['delta']:+.1f}{ci}"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append(
        f"| {name} | mean length | {ours['mean_length']:.0f} | {theirs['mean_length']:.0f} | "
        f"{diff['mean_length']:+.0f} |"
    )
    lines.append(
        f"| {name} | no answer % | {_pct(ours['no_answer_rate'])} | {_pct(theirs['no_answer_rate'])} | "
        f"{100 * diff['no_answer_rate']:+.1f} |"
    )
    return lines


def format_comparison(report: Mapping[str, Any], baseline: Mapping[str, Any], difference: Mapping) -> str:
    """A markdown table of two models side by side, with model − baseline and its paired 95% CI."""
    header = ["benchmark", "metric", "model", "baseline", "Δ (95% CI)"]
    lines = [
        f"model: {report['metadata']['model']}    baseline: {baseline['metadata']['model']}",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---|---:|---:|---:|",
    ]
    for name, ours in report["results"].items():
        theirs = baseline["results"].get(name)
        if theirs is not None:
            lines += _comparison_rows(name, ours, theirs, difference[name])
    a, b = report.get("average") or {}, baseline.get("average") or {}
    if "pass@1" in a and "pass@1" in b:
        lines.append(
            f"| average | pass@1 | {_pct(a['pass@1'])} | {_pct(b['pass@1'])} | "
            f"{100 * (a['pass@1'] - b['pass@1']):+.1f} |"
        )
    return "\n".join(lines)
