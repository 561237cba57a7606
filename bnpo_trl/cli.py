"""The ``bnpo-trl`` command: ``train``, ``quickstart``, ``eval``, ``replay`` and ``recipes``.

The recipes and accelerate configs ship inside the package (``bnpo_trl/configs/``, read with
``importlib.resources``), so a ``pip install bnpo-trl`` without a checkout runs ``bnpo-trl quickstart`` and
``bnpo-trl train --config recipes/qwen2.5-math-1.5b/bnpo.yaml``; in a checkout, ``configs/`` links to them.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

__all__ = ["main", "shipped_configs"]

USAGE = """usage: bnpo-trl <command> [args]

commands:
  train --config RECIPE.yaml [--field value ...]   train with NormalizedGRPOTrainer (RECIPE: a file, or a
                                                     shipped one such as recipes/qwen2.5-math-1.5b/bnpo.yaml)
      --dry-run                                      print the resolved configuration and exit (no model)
      --smoke                                        run the recipe on CPU with a tiny stand-in model: 2 steps,
                                                     a checkpoint and a resume; prints what it substituted
                                                     (docs/smoke.md)
  quickstart [--seed N] [--field value ...]          the offline CPU demo (the shipped quickstart.yaml)
  eval --model PATH_OR_ID [--benchmarks math500,aime24,aime25,amc23] [--n 4] [...]
                                                     pass@1/pass@k on math benchmarks (eval --help)
  replay REWARDS_FILE [--normalizers group,bnpo,ebpo] [--output_dir DIR]
                                                     replay normalizers over a run's reward log
                                                     (save_rewards: true): table and plot (docs/replay.md)
  recipes [--copy DIR]                               list the shipped recipes and accelerate configs, or
                                                     copy them into DIR
"""


def shipped_configs() -> list[str]:
    """The YAML files shipped in ``bnpo_trl/configs``, as paths relative to it (sorted).

    Examples:
        >>> "quickstart.yaml" in shipped_configs() and "recipes/qwen2.5-math-1.5b/bnpo.yaml" in shipped_configs()
        True
    """
    root = resources.files("bnpo_trl") / "configs"

    def walk(node, prefix: str) -> Iterator[str]:
        for child in node.iterdir():
            if child.is_dir():
                yield from walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml"):
                yield f"{prefix}{child.name}"

    return sorted(walk(root, ""))


@contextlib.contextmanager
def _shipped_file(relative: str) -> Iterator[str]:
    with resources.as_file(resources.files("bnpo_trl") / "configs" / relative) as path:
        yield str(path)


def _with_shipped_config(argv: list[str]) -> tuple[list[str], str | None]:
    """``--config NAME`` where NAME is not a file but a shipped recipe: -> (argv, NAME) to resolve."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config" and not Path(argv[i + 1]).exists():
            name = argv[i + 1].removeprefix("configs/")
            if name in shipped_configs():
                return argv[:i] + argv[i + 2 :], name
    return argv, None


def _train(argv: list[str], shipped: str | None = None) -> None:
    from bnpo_trl.train import command as train_main

    if shipped is None:
        argv, shipped = _with_shipped_config(argv)
    if shipped is None:
        train_main(argv)
        return
    with _shipped_file(shipped) as path:
        train_main(["--config", path, *argv])


def _recipes(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bnpo-trl recipes", description="The shipped recipes and configs.")
    parser.add_argument("--copy", metavar="DIR", help="copy every shipped config into DIR (kept relative)")
    args = parser.parse_args(argv)
    names = shipped_configs()
    if args.copy is None:
        print("Shipped configs (use as `bnpo-trl train --config NAME`, or copy them with --copy DIR):")
        for name in names:
            print(f"  {name}")
        return
    target = Path(args.copy)
    for name in names:
        dest = target / name
        if dest.exists():
            raise SystemExit(f"{dest} exists already: choose an empty folder for --copy.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _shipped_file(name) as path:
            shutil.copyfile(path, dest)
    print(f"Copied {len(names)} configs into {target}/ (e.g. {target / 'quickstart.yaml'}).")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "train":
        _train(rest)
    elif command == "quickstart":
        _train(rest, shipped="quickstart.yaml")
    elif command == "eval":
        from bnpo_trl.evaluation import main as eval_main

        eval_main(rest)
    elif command == "replay":
        from bnpo_trl.replay import main as replay_main

        replay_main(rest)
    elif command == "recipes":
        _recipes(rest)
    else:
        print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
