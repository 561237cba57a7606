"""``bnpo-trl train --config RECIPE --smoke``: run a GPU recipe on a CPU machine in seconds, before ``sbatch``.

The recipe runs as written (its data pipeline and schema parsing, rewards with their kwargs, the normalizer
and its options, LoRA, curriculum, held-out set, warm-up, callbacks, loss settings) through the same
:func:`bnpo_trl.pipeline.run`, with only what a CPU cannot do, or cannot do quickly, substituted:

- the model: a tiny randomly initialised model of the same architecture family (read from the model's
  ``config.json`` when it is available offline, else from the model id; Qwen2/Qwen2.5 ids get the offline
  tiny Qwen2 of :mod:`bnpo_trl.tiny_model`) with the offline tiny tokenizer; a ``tiny:`` model is kept;
- fp32 on the CPU (``bf16``/``fp16`` false, ``use_cpu`` true, model ``dtype`` float32), no vLLM (the
  trainer's own ``generate``), no DeepSpeed/FSDP/quantization/flash-attention/Liger, no Hub push or loggers;
- Hub datasets: when the Hub cannot be reached (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` set, or no
  connection), a few generated rows in the Hub dataset's own schema (written to a temp folder and read
  through the same loader with ``path=``); either way at most :data:`TRAIN_ROWS` / :data:`EVAL_ROWS` rows;
- sizes: completions of at most :data:`MAX_COMPLETION_LENGTH` tokens; ``num_generations`` and
  ``gradient_accumulation_steps`` kept, ``per_device_train_batch_size`` the smallest multiple that keeps
  whole prompt groups with at least 2 prompts per generation batch; a short warm-up and held-out check;
- steps: 2 optimizer steps with a checkpoint at step 2, then a second run resumed from that checkpoint
  (``resume_from_checkpoint=<path>``) to step 3; ``output_dir`` a new temp folder.

Every substitution is printed before the run (:func:`apply_smoke` returns them as lines). Set
``BNPO_TRL_SMOKE_DATA=fixtures`` (or ``hub``) to force the data source, ``BNPO_TRL_SMOKE_DIR`` for the folder
the temp folder is made in.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bnpo_trl.smoke_data import (
    EVAL_ROWS,
    TRAIN_ROWS,
    fixture_rows,
    hub_reachable,
    substitute_benchmarks,
    substitute_data,
)

__all__ = [
    "EVAL_ROWS",
    "MAX_COMPLETION_LENGTH",
    "SMOKE_STEPS",
    "TINY_SPEC",
    "TRAIN_ROWS",
    "apply_smoke",
    "architecture_family",
    "fixture_rows",
    "hub_reachable",
    "run_smoke",
    "smoke_batch_size",
]

#: The tiny Qwen2 stand-in (the offline model of :mod:`bnpo_trl.tiny_model`, built once and cached).
TINY_SPEC = "tiny:hidden_size=64,num_hidden_layers=2,num_attention_heads=4"
MAX_COMPLETION_LENGTH = 16
#: Optimizer steps of the first run (the checkpoint is saved at the last one); the resume adds one.
SMOKE_STEPS = 2
_TINY_SIZES = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4}
# (substring of a lower-cased model id, transformers model_type), first match wins
_ID_FAMILIES = (
    ("qwen3", "qwen3"),
    ("qwen", "qwen2"),  # Qwen2, Qwen2.5, Qwen2.5-Math, QwQ, DeepSeek-R1-Distill-Qwen
    ("qwq", "qwen2"),
    ("llama", "llama"),
    ("mistral", "mistral"),
    ("gemma", "gemma"),
)
_FAST_ATTENTION = ("eager", "sdpa", None)


# --- model ---------------------------------------------------------------------------------------------------


def architecture_family(name: str) -> tuple[str | None, str]:
    """-> (transformers ``model_type`` of ``name``, where it was read): a ``tiny:`` model is ``qwen2``; a
    folder's ``config.json``; the config in the local Hugging Face cache (no download); else the model id
    (``Qwen/Qwen2.5-Math-7B`` -> ``qwen2``); ``(None, ...)`` when none of these tells.

    Examples:
        >>> architecture_family("tiny:hidden_size=64")[0], architecture_family("org/My-Llama-3-8B")[0]
        ('qwen2', 'llama')
    """
    from bnpo_trl.models import TINY_PREFIX

    if name.startswith(TINY_PREFIX):
        return "qwen2", "the offline tiny model"
    config_file = Path(name) / "config.json"
    if config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type:
            return str(model_type), f"{config_file}"
    lowered = name.lower()
    if "/" in name and not Path(name).exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
            if isinstance(cached, str):
                model_type = json.loads(Path(cached).read_text()).get("model_type")
                if model_type:
                    return str(model_type), "its config.json in the local Hugging Face cache"
        except Exception:  # an unusual id or cache layout: fall back to the id
            pass
    for pattern, family in _ID_FAMILIES:
        if pattern in lowered:
            return family, "the model id (its config is not available offline)"
    return None, "neither its config nor its id names a known family"


def _tiny_model_of_family(model_type: str, folder: Path) -> str:
    """A random tiny model of ``model_type`` with the offline tiny tokenizer, saved into ``folder``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from bnpo_trl.tiny_model import EOS_TOKEN, PAD_TOKEN, build_tokenizer

    tokenizer = build_tokenizer()
    eos, pad = tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        num_key_value_heads=_TINY_SIZES["num_attention_heads"],
        head_dim=_TINY_SIZES["hidden_size"] // _TINY_SIZES["num_attention_heads"],
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        **_TINY_SIZES,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _substitute_model(model_args: Any, folder: Path) -> tuple[Any, list[str]]:
    from bnpo_trl.models import TINY_PREFIX

    name = model_args.model_name_or_path or ""
    changes: dict[str, Any] = {}
    lines: list[str] = []
    if name.startswith(TINY_PREFIX):
        lines.append(f"model: {name} kept (already the offline tiny model)")
    else:
        family, where = architecture_family(name)
        if family == "qwen2":
            stand_in = TINY_SPEC
        elif family is None:
            stand_in, where = TINY_SPEC, f"{where}; Qwen2 used"
        else:
            try:
                stand_in = _tiny_model_of_family(family, folder / f"tiny-{family}")
            except Exception as err:  # a family whose config takes other size names
                raise ValueError(
                    f"--smoke cannot build a tiny {family!r} model (read from {where}): {err}. Run it with "
                    f"--model_name_or_path {TINY_SPEC} to use the tiny Qwen2 instead."
                ) from err
        changes["model_name_or_path"] = stand_in
        lines.append(
            f"model: {name} -> {stand_in} (random tiny {family or 'qwen2'} of 2 layers x 64 wide, family read "
            f"from {where}; tokenizer: the offline tiny byte-level BPE with a ChatML template)"
        )
        changes["model_revision"] = "main"
    if model_args.dtype not in (None, "float32", "auto"):
        lines.append(f"model dtype: {model_args.dtype} -> float32")
    changes["dtype"] = "float32"
    if model_args.attn_implementation not in _FAST_ATTENTION:
        lines.append(f"attn_implementation: {model_args.attn_implementation} -> sdpa (CPU)")
        changes["attn_implementation"] = "sdpa"
    for key in ("load_in_4bit", "load_in_8bit"):
        if getattr(model_args, key, False):
            lines.append(f"{key}: true -> false (bitsandbytes needs a GPU)")
            changes[key] = False
    if model_args.use_peft:
        lines.append(
            f"LoRA kept: r={model_args.lora_r}, alpha={model_args.lora_alpha}, "
            f"target_modules={model_args.lora_target_modules}"
        )
    return dataclasses.replace(model_args, **changes), lines


# --- GRPO settings -------------------------------------------------------------------------------------------


def smoke_batch_size(num_generations: int, steps_per_generation: int) -> int:
    """The smallest ``per_device_train_batch_size`` (one process) whose generation batch
    (``per_device x steps_per_generation``) holds whole groups of ``num_generations`` and at least 2 prompts.

    Examples:
        >>> smoke_batch_size(8, 2), smoke_batch_size(16, 4), smoke_batch_size(4, 1), smoke_batch_size(6, 4)
        (8, 8, 8, 3)
    """
    unit = num_generations // math.gcd(num_generations, steps_per_generation)
    size = unit
    while size * steps_per_generation < 2 * num_generations:
        size += unit
    return size


def rebuild_config(training_args: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for a GRPO config: re-runs its checks with ``generation_batch_size`` derived
    again (and ``steps_per_generation`` too unless it was set apart from ``gradient_accumulation_steps``)."""
    if "steps_per_generation" not in changes:
        steps = training_args.steps_per_generation
        changes["steps_per_generation"] = (
            None if steps == training_args.gradient_accumulation_steps else steps
        )
    changes["generation_batch_size"] = None
    return dataclasses.replace(training_args, **changes)


def _substitute_grpo(args: Any, requested: dict[str, bool], output_dir: Path) -> tuple[Any, list[str]]:
    lines: list[str] = []
    changes: dict[str, Any] = {"bf16": False, "fp16": False, "use_cpu": True, "use_vllm": False}
    target = {"bf16": False, "fp16": False, "use_cpu": True}
    if any(bool(requested.get(k)) != v for k, v in target.items()):
        lines.append(
            "precision/device: "
            + ", ".join(f"{k} {str(bool(requested.get(k))).lower()}" for k in target)
            + " -> bf16 false, fp16 false, use_cpu true (fp32 on CPU)"
        )
    if requested.get("use_vllm"):
        lines.append(
            f"use_vllm: true (vllm_mode {args.vllm_mode}) -> false (the trainer's own transformers generate)"
        )
    spg = args.steps_per_generation or args.gradient_accumulation_steps
    per_device = smoke_batch_size(args.num_generations, spg)
    prompts = per_device * spg // args.num_generations
    lines.append(
        f"per_device_train_batch_size: {args.per_device_train_batch_size} -> {per_device} (num_generations "
        f"{args.num_generations} and gradient_accumulation_steps {args.gradient_accumulation_steps} kept; "
        f"{per_device * spg} completions = {prompts} prompts per generation, one process)"
    )
    changes["per_device_train_batch_size"] = per_device
    if args.max_completion_length is None or args.max_completion_length > MAX_COMPLETION_LENGTH:
        lines.append(f"max_completion_length: {args.max_completion_length} -> {MAX_COMPLETION_LENGTH}")
        changes["max_completion_length"] = MAX_COMPLETION_LENGTH
    lines.append(
        f"steps: max_steps {args.max_steps} (num_train_epochs {args.num_train_epochs}) -> {SMOKE_STEPS}, "
        f"checkpoint at step {SMOKE_STEPS}, then resume from it to step {SMOKE_STEPS + 1}"
    )
    changes.update(max_steps=SMOKE_STEPS, logging_steps=1, save_strategy="steps", save_steps=SMOKE_STEPS)
    changes.update(save_only_model=False, resume_from_checkpoint=None)
    lines.append(
        f"save: {_plain(args.save_strategy)} every {args.save_steps} -> steps every {SMOKE_STEPS} "
        f"(save_total_limit {args.save_total_limit} kept)"
    )
    if _plain(args.eval_strategy) != "no":
        eval_batch = args.num_generations_eval or args.num_generations
        changes.update(eval_steps=SMOKE_STEPS, per_device_eval_batch_size=eval_batch)
        lines.append(f"evaluation: every {args.eval_steps} -> every {SMOKE_STEPS} steps, batch {eval_batch}")
    lines.append(f"output_dir: {args.output_dir} -> {output_dir}")
    changes["output_dir"] = str(output_dir)
    if args.push_to_hub:
        lines.append("push_to_hub: true -> false")
    changes["push_to_hub"] = False
    if args.report_to not in ([], ["none"], "none", None):
        lines.append(f"report_to: {args.report_to} -> none")
    changes["report_to"] = "none"
    for key, off in (
        ("deepspeed", None),
        ("fsdp", ""),
        ("torch_compile", False),
        ("use_liger_kernel", False),
    ):
        if getattr(args, key, None):
            lines.append(f"{key}: {getattr(args, key)} -> {off!r} (not on one CPU process)")
            changes[key] = off
    if any(tag in str(args.optim) for tag in ("8bit", "bnb", "apex", "paged")):
        lines.append(f"optim: {args.optim} -> adamw_torch (CPU)")
        changes["optim"] = "adamw_torch"
    init_kwargs = dict(args.model_init_kwargs or {})
    for key in ("dtype", "torch_dtype", "device_map", "quantization_config"):
        if key in init_kwargs:
            lines.append(f"model_init_kwargs.{key}: {init_kwargs.pop(key)} -> (removed)")
    if args.model_init_kwargs:
        changes["model_init_kwargs"] = init_kwargs or None
    return rebuild_config(args, **changes), lines


def _substitute_script(script_args: Any, folder: Path) -> tuple[Any, list[str]]:
    use_hub, why = hub_reachable()
    data, lines = substitute_data(script_args.data, folder, use_hub, why)
    warmup = script_args.warmup
    if warmup.sft_warmup:
        small = {
            "sft_warmup_max_steps": min(warmup.sft_warmup_max_steps, SMOKE_STEPS),
            "sft_warmup_max_seconds": min(warmup.sft_warmup_max_seconds, 10.0),
            "sft_warmup_eval_steps": 1,
            "sft_warmup_eval_limit": min(warmup.sft_warmup_eval_limit, EVAL_ROWS),
            "sft_warmup_batch_size": min(warmup.sft_warmup_batch_size, 8),
        }
        lines.append(
            "warm-up: "
            + ", ".join(
                f"{k.removeprefix('sft_warmup_')} {getattr(warmup, k)} -> {v}" for k, v in small.items()
            )
        )
        warmup = dataclasses.replace(warmup, **small)
    held = script_args.heldout
    if held.heldout_accuracy:
        small = {
            "heldout_eval_steps": 1 if held.heldout_eval_steps else 0,
            "heldout_max_new_tokens": min(held.heldout_max_new_tokens, MAX_COMPLETION_LENGTH),
        }
        lines.append(
            "held-out accuracy: " + ", ".join(f"{k} {getattr(held, k)} -> {v}" for k, v in small.items())
        )
        held = dataclasses.replace(held, **small)
    if held.benchmark_eval:
        settings, more = substitute_benchmarks(
            held.benchmark_eval, folder, use_hub, why, MAX_COMPLETION_LENGTH
        )
        held, lines = dataclasses.replace(held, benchmark_eval=settings), lines + more
    return dataclasses.replace(script_args, data=data, warmup=warmup, heldout=held), lines


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _kept(script_args: Any, training_args: Any, model_args: Any) -> list[str]:
    data = script_args.data
    kept = [
        f"rewards {script_args.rewards.reward_funcs} (reward_requires_eos {script_args.rewards.reward_requires_eos})",
        f"normalizer {training_args.advantage_normalizer} {training_args.normalizer_kwargs or {}}",
        f"loss {training_args.loss_type}, beta {training_args.beta}, epsilon {training_args.epsilon}/"
        f"{training_args.epsilon_high}, temperature {training_args.temperature}, lr {training_args.learning_rate} "
        f"{_plain(training_args.lr_scheduler_type)}",
        f"curriculum {data.curriculum}, max_prompt_length {data.max_prompt_length}, system prompt "
        f"{'set' if data.system_prompt else 'none'}",
        f"gradient_checkpointing {training_args.gradient_checkpointing}, seed {training_args.seed}, "
        f"LoRA {'on' if model_args.use_peft else 'off'}, time budget {script_args.budget.time_budget_seconds}",
    ]
    return ["kept: " + line for line in kept]


def apply_smoke(
    script_args: Any,
    training_args: Any,
    model_args: Any,
    *,
    requested: dict[str, bool] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any, Any, list[str]]:
    """The smoke version of a parsed recipe: -> (ScriptArguments, NormalizedGRPOConfig, ModelConfig, the
    substitutions as printable lines). See the module docstring for what changes and what is kept.

    Args:
        script_args, training_args, model_args: The parsed recipe (parsed with
            :data:`bnpo_trl.recipe.CPU_FLAGS` on a machine without a GPU).
        requested: The recipe's own ``bf16``/``fp16``/``use_vllm``/``use_cpu``
            (:func:`bnpo_trl.recipe.recipe_device_settings`), for the report; default: ``training_args``'.
        root: Folder to make the temp folder in (default ``$BNPO_TRL_SMOKE_DIR`` or the system temp folder);
            the temp folder holds ``output/`` (the run), ``data/`` (generated rows) and tiny models.
    """
    if requested is None:
        requested = {k: bool(getattr(training_args, k)) for k in ("bf16", "fp16", "use_vllm", "use_cpu")}
    root = root or os.environ.get("BNPO_TRL_SMOKE_DIR") or None
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bnpo-smoke-", dir=root))
    new_script, lines = _substitute_script(script_args, folder / "data")
    new_model, model_lines = _substitute_model(model_args, folder)
    new_training, grpo_lines = _substitute_grpo(training_args, requested, folder / "output")
    lines = model_lines + grpo_lines + lines
    return new_script, new_training, new_model, [*lines, *_kept(new_script, new_training, new_model)]


def run_smoke(argv: list[str], dry_run: bool = False) -> dict[str, Any]:
    """``--smoke`` (``argv`` without it): parse the recipe, :func:`apply_smoke`, print the substitutions, then
    :func:`bnpo_trl.pipeline.run` to step 2 (checkpoint) and again resumed from that checkpoint to step 3.
    With ``dry_run``, print the substituted configuration instead of running. -> a summary of both runs."""
    from bnpo_trl.pipeline import run
    from bnpo_trl.recipe import CPU_FLAGS, format_config, parse_recipe, recipe_device_settings

    started = time.perf_counter()
    requested = recipe_device_settings(argv)
    recipe = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "(no --config)"
    script_args, training_args, model_args = parse_recipe([*argv, *CPU_FLAGS])
    script_args, training_args, model_args, lines = apply_smoke(
        script_args, training_args, model_args, requested=requested
    )
    header = [f"bnpo-trl --smoke: {recipe} as written, except:"] + [f"  - {line}" for line in lines]
    print("\n".join(header), flush=True)
    if dry_run:
        print(format_config(script_args, training_args, model_args), flush=True)
        return {
            "dry_run": True,
            "smoke": True,
            "substitutions": lines,
            "output_dir": training_args.output_dir,
        }
    first = run(script_args, training_args, model_args)
    checkpoint = Path(training_args.output_dir) / f"checkpoint-{SMOKE_STEPS}"
    if first.get("steps") != SMOKE_STEPS or not (checkpoint / "trainer_state.json").is_file():
        raise RuntimeError(
            f"--smoke: the first run stopped at step {first.get('steps')} (preempted at "
            f"{first.get('preempted_at_step')}) and {checkpoint} holds no complete checkpoint."
        )
    first_seconds = time.perf_counter() - started
    resumed_args = rebuild_config(
        training_args, max_steps=SMOKE_STEPS + 1, resume_from_checkpoint=str(checkpoint)
    )
    second = run(script_args, resumed_args, model_args)
    if second.get("steps") != SMOKE_STEPS + 1:
        raise RuntimeError(
            f"--smoke: the run resumed from {checkpoint} ended at step {second.get('steps')}, not {SMOKE_STEPS + 1}."
        )
    seconds = time.perf_counter() - started
    print(
        f"bnpo-trl --smoke passed: {recipe}: {SMOKE_STEPS} steps + checkpoint, resumed from {checkpoint.name} to "
        f"step {SMOKE_STEPS + 1}, in {seconds:.1f} s (first run {first_seconds:.1f} s). Output: "
        f"{training_args.output_dir}",
        flush=True,
    )
    return {
        "smoke": True,
        "recipe": recipe,
        "substitutions": lines,
        "output_dir": training_args.output_dir,
        "checkpoint": str(checkpoint),
        "first": first,
        "resumed": second,
        "seconds": seconds,
    }


if __name__ == "__main__":
    run_smoke(sys.argv[1:])
