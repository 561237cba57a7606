"""The ``bnpo-trl`` command: ``bnpo-trl train ...``, ``bnpo-trl quickstart ...``, ``bnpo-trl eval ...``."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """usage: bnpo-trl <command> [args]

commands:
  train --config RECIPE.yaml [--field value ...]   train with NormalizedGRPOTrainer (see configs/recipes/)
  quickstart [--seed N] [--field value ...]          the offline CPU demo (configs/quickstart.yaml)
  eval --model PATH_OR_ID [--benchmarks math500,aime24,aime25,amc23] [--n 4] [...]
                                                     pass@1/pass@k on math benchmarks (eval --help)
"""


def _quickstart_recipe() -> str:
    here = Path(__file__).resolve()
    for candidate in (
        here.parent / "configs" / "quickstart.yaml",
        here.parents[1] / "configs" / "quickstart.yaml",
    ):
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError("configs/quickstart.yaml not found: run from a checkout of bnpo-trl.")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        from bnpo_trl.train import main as train_main

        train_main(rest)
    elif command == "quickstart":
        from bnpo_trl.train import main as train_main

        train_main(["--config", _quickstart_recipe(), *rest])
    elif command == "eval":
        from bnpo_trl.evaluation import main as eval_main

        eval_main(rest)
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
