"""Reading a recipe: YAML + command line -> the argument groups, :class:`~bnpo_trl.NormalizedGRPOConfig` and
TRL's ``ModelConfig``, parsed with ``TrlParser``; what it asks of the machine (bf16, fp16, vLLM) and the error
when this machine cannot honour it; the resolved configuration that ``--dry-run`` prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bnpo_trl.arguments import ARGUMENT_CLASSES, ScriptArguments

__all__ = [
    "CPU_FLAGS",
    "NEEDS_GPU",
    "RecipeNeedsGPUError",
    "dry_run",
    "format_config",
    "gpu_settings_missing",
    "parse_args",
    "parse_args_anywhere",
    "parse_recipe",
    "recipe_device_settings",
    "resolved_config",
]


#: The start of the error a GPU recipe (bf16, fp16 or vLLM) gives on a machine without CUDA.
NEEDS_GPU = "this recipe needs a GPU (bf16/vLLM); use --smoke to try it on CPU"
#: Command-line overrides that make any recipe parse (and train) in fp32 on the CPU, without vLLM.
CPU_FLAGS = ("--bf16", "false", "--fp16", "false", "--use_vllm", "false", "--use_cpu", "true")
_DEVICE_KEYS = ("bf16", "fp16", "use_vllm", "use_cpu")


class RecipeNeedsGPUError(ValueError):
    """A recipe asks for bf16, fp16 or vLLM on a machine without a CUDA GPU (not a mistake in the recipe)."""


def _flag_value(text: Any) -> bool:
    if isinstance(text, bool) or text is None:
        return bool(text)
    return str(text).strip().lower() in ("true", "yes", "y", "1", "on")


def recipe_device_settings(argv: list[str]) -> dict[str, bool]:
    """``bf16``, ``fp16``, ``use_vllm`` and ``use_cpu`` as the recipe (``--config``) and the command line set
    them (TRL's defaults where neither does: ``bf16`` is on unless ``fp16`` is), read without building the
    config, whose own bf16 check fails on a machine without a bf16 GPU."""
    import yaml

    values: dict[str, Any] = {}
    if "--config" in argv[:-1]:
        with open(argv[argv.index("--config") + 1]) as f:
            recipe = yaml.safe_load(f)
        if isinstance(recipe, dict):
            values.update({k: recipe[k] for k in _DEVICE_KEYS if k in recipe})
    for i, arg in enumerate(argv):
        key, _, inline = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or key not in _DEVICE_KEYS:
            continue
        following = argv[i + 1] if i + 1 < len(argv) else ""
        values[key] = (
            inline if inline else (following if following and not following.startswith("--") else True)
        )
    settings = {k: _flag_value(values.get(k)) for k in ("fp16", "use_vllm", "use_cpu")}
    settings["bf16"] = not settings["fp16"] if values.get("bf16") is None else _flag_value(values["bf16"])
    return settings


def gpu_settings_missing(settings: dict[str, bool]) -> list[str]:
    """The settings among :func:`recipe_device_settings` that this machine cannot honour (no CUDA): ``bf16``
    (without ``use_cpu``), ``fp16`` and ``use_vllm``; empty with a CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return []
    wanted = {"bf16": settings["bf16"] and not settings["use_cpu"], "fp16": settings["fp16"]}
    wanted["use_vllm"] = settings["use_vllm"]
    return [key for key, on in wanted.items() if on]


def _needs_gpu_error(missing: list[str]) -> RecipeNeedsGPUError:
    return RecipeNeedsGPUError(
        f"{NEEDS_GPU}. It sets {', '.join(f'{k}: true' for k in missing)}, and this machine has no CUDA GPU. "
        "(`--smoke` runs it with a tiny stand-in model, fp32 and the trainer's own generation; to really train "
        "on CPU, set bf16: false, use_vllm: false and use_cpu: true.)"
    )


def parse_recipe(argv: list[str]) -> tuple[ScriptArguments, Any, Any]:
    """TrlParser on the recipe and command line; its errors (unknown keys, bad values) are 'Invalid recipe'."""
    from trl import ModelConfig, TrlParser

    from bnpo_trl.config import NormalizedGRPOConfig

    parser = TrlParser((*ARGUMENT_CLASSES, NormalizedGRPOConfig, ModelConfig))
    try:
        *groups, training_args, model_args = parser.parse_args_and_config(args=argv)
    except ValueError as err:  # name the recipe key when TRL says "Unknown arguments from config file"
        raise ValueError(f"Invalid recipe: {err}") from err
    return ScriptArguments(*groups), training_args, model_args


def parse_args(argv: list[str] | None = None) -> tuple[ScriptArguments, Any, Any]:
    """Recipe YAML + command line -> (ScriptArguments, NormalizedGRPOConfig, ModelConfig).

    Unknown keys and bad values are ``ValueError("Invalid recipe: ...")``; a recipe that needs a GPU (bf16,
    fp16, vLLM) on a machine without CUDA is :class:`RecipeNeedsGPUError` (:data:`NEEDS_GPU`), also when the
    bf16 check of ``TrainingArguments`` is what fails; a recipe with both problems names the bad key.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    missing = gpu_settings_missing(recipe_device_settings(argv))
    try:
        parsed = parse_recipe(argv)
    except ValueError as err:
        if not missing:
            raise
        parse_recipe([*argv, *CPU_FLAGS])  # a mistake in the recipe itself still says "Invalid recipe"
        raise _needs_gpu_error(missing) from err
    if missing:  # fp16 / use_vllm: TRL accepts them here and would fail later, after loading
        raise _needs_gpu_error(missing)
    return parsed


def parse_args_anywhere(argv: list[str]) -> tuple[tuple[ScriptArguments, Any, Any], dict[str, bool]]:
    """Parse a recipe whether or not this machine can run it: -> (the triple, :func:`recipe_device_settings`).

    Without CUDA a GPU recipe is parsed with :data:`CPU_FLAGS` appended, then ``bf16``/``fp16``/``use_vllm``/
    ``use_cpu`` are set back to the recipe's values (for display: that config is not re-validated).
    """
    settings = recipe_device_settings(argv)
    if not gpu_settings_missing(settings):
        return parse_recipe(argv), settings
    parsed = parse_recipe([*argv, *CPU_FLAGS])
    for key, value in settings.items():
        setattr(parsed[1], key, value)
    return parsed, settings


def dry_run(argv: list[str]) -> dict[str, Any]:
    """``--dry-run``: print the resolved configuration (:func:`format_config`) and return it; loads no model
    and no data, and works for a GPU recipe on a machine without one (with a note saying so)."""
    (script_args, training_args, model_args), settings = parse_args_anywhere(argv)
    text = format_config(script_args, training_args, model_args)
    missing = gpu_settings_missing(settings)
    if missing:
        text += f"\n# note: {_needs_gpu_error(missing)}"
    print(text, flush=True)
    return {
        "dry_run": True,
        "config": resolved_config(script_args, training_args, model_args),
        "needs_gpu": missing,
    }


def resolved_config(script_args: ScriptArguments, training_args: Any, model_args: Any) -> dict[str, Any]:
    """Per group (data, rewards, warmup, heldout, budget, grpo, model): the fields that differ from their
    defaults, as plain data."""
    return {
        **{name: _changed_fields(getattr(script_args, name)) for name in _SCRIPT_GROUPS},
        "grpo": _changed_fields(training_args),
        "model": _changed_fields(model_args),
    }


def format_config(script_args: ScriptArguments, training_args: Any, model_args: Any) -> str:
    """:func:`resolved_config` as YAML, with the values GRPOConfig derives (generation batch, world size)."""
    import yaml

    resolved = resolved_config(script_args, training_args, model_args)
    derived = {
        "generation_batch_size": training_args.generation_batch_size,
        "steps_per_generation": training_args.steps_per_generation,
        "world_size": training_args.world_size,
    }
    return "\n".join(
        [
            "# bnpo-trl --dry-run: the resolved configuration, the fields that differ from their defaults "
            f"(groups: {', '.join(resolved)}); nothing loaded.",
            yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True, width=110).rstrip(),
            f"# derived on this machine: {json.dumps(derived)}",
        ]
    )


_SCRIPT_GROUPS = ("data", "rewards", "warmup", "heldout", "budget")


def _plain(value: Any) -> Any:
    """A config value as YAML-safe plain data (enums by value, dataclasses as dicts)."""
    import dataclasses
    import enum

    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _changed_fields(obj: Any) -> dict[str, Any]:
    """The init fields of a dataclass instance whose value differs from the field's default."""
    import dataclasses

    changed = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if _plain(value) != _plain(default):
            changed[f.name] = _plain(value)
    return changed
