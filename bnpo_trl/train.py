"""Training entry point: ``bnpo-trl train --config recipe.yaml [--field value ...]``.

Also ``python -m bnpo_trl.train ...``, which is what ``accelerate launch`` runs::

    accelerate launch --config_file configs/accelerate/zero2.yaml -m bnpo_trl.train \\
        --config configs/recipes/qwen2.5-math-1.5b/bnpo.yaml

The recipe's keys are the fields of the argument groups in :mod:`bnpo_trl.arguments` (data, rewards,
warm-up, held-out accuracy, time budget), TRL's ``ModelConfig`` (model, LoRA) and
:class:`~bnpo_trl.NormalizedGRPOConfig` (everything GRPO); an unknown key is an error that names it.
Parsing lives in :mod:`bnpo_trl.recipe`, the run in :mod:`bnpo_trl.pipeline`; this module is the command.
"""

from __future__ import annotations

import sys
from typing import Any

from bnpo_trl.arguments import ScriptArguments
from bnpo_trl.models import load_model_and_tokenizer
from bnpo_trl.pipeline import drop_long_prompts, load_datasets, load_warmup_check_set, require_eos, run
from bnpo_trl.recipe import (
    CPU_FLAGS,
    NEEDS_GPU,
    RecipeNeedsGPUError,
    dry_run,
    gpu_settings_missing,
    parse_args,
    recipe_device_settings,
)

__all__ = [
    "CPU_FLAGS",
    "NEEDS_GPU",
    "RecipeNeedsGPUError",
    "ScriptArguments",
    "command",
    "drop_long_prompts",
    "gpu_settings_missing",
    "load_datasets",
    "load_model_and_tokenizer",
    "load_warmup_check_set",
    "main",
    "parse_args",
    "recipe_device_settings",
    "require_eos",
    "run",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run a recipe end to end; returns the run summary (also written to ``<output_dir>/run_summary.json``).

    ``--dry-run`` prints the resolved configuration and returns (:func:`dry_run`); ``--smoke`` runs the recipe
    with a tiny stand-in model on CPU, 2 steps, a checkpoint and a resume (:mod:`bnpo_trl.smoke`; with
    ``--dry-run`` too, it prints the substituted configuration instead). Both flags are taken out of ``argv``
    before the recipe is parsed.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    smoke, dry = "--smoke" in argv, "--dry-run" in argv
    argv = [arg for arg in argv if arg not in ("--smoke", "--dry-run")]
    if smoke:
        from bnpo_trl.smoke import run_smoke

        return run_smoke(argv, dry_run=dry)
    if dry:
        return dry_run(argv)
    script_args, training_args, model_args = parse_args(argv)
    return run(script_args, training_args, model_args)


def command(argv: list[str] | None = None) -> None:
    """:func:`main` as the shell runs it: a recipe that needs a GPU, or an invalid recipe, exits with its one
    message (status 1) instead of a traceback; every other error keeps its traceback."""
    try:
        main(argv)
    except RecipeNeedsGPUError as err:
        raise SystemExit(f"bnpo-trl train: {err}") from None
    except ValueError as err:
        if not str(err).startswith("Invalid recipe"):
            raise
        raise SystemExit(f"bnpo-trl train: {err}") from None


if __name__ == "__main__":
    command(sys.argv[1:])
