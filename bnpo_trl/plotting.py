"""Training-curve PNG of a run summary (matplotlib, a dependency of bnpo-trl)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_run(summary: dict[str, Any], path: str) -> None:
    """Mean training reward per RL step and held-out greedy accuracy at the measured steps."""
    steps = [e["step"] for e in summary["log_history"] if "reward" in e]
    rewards = [e["reward"] for e in summary["log_history"] if "reward" in e]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, rewards, color="tab:blue", alpha=0.6, label="training reward (sampled, T=1)")
    curve = summary.get("heldout_curve") or []
    if curve:
        ax.plot(
            [s for s, _ in curve],
            [a for _, a in curve],
            "o-",
            color="tab:red",
            label="held-out accuracy (greedy)",
        )
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1)
    ax.set_title(f"{summary['normalizer']} normalizer, seed {summary['seed']}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
