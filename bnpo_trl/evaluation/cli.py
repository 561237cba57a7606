"""``bnpo-trl eval``: the options (:class:`EvalArguments`, parsed by ``trl.TrlParser`` like ``bnpo-trl
train``: ``--config eval.yaml`` plus flag overrides), the training recipe it reuses (``--recipe``), and
:func:`main`.

``--config`` takes either a YAML file of :class:`EvalArguments` fields or, as before, a training recipe:
a file with keys that are not eval options (``model_name_or_path``, ``reward_funcs``, ...) is read as the
recipe, exactly as ``--recipe FILE``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bnpo_trl.arguments import parse_list, system_prompt_setting
from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.evaluation.backends import Backend, TransformersBackend
from bnpo_trl.evaluation.benchmarks import DEFAULT_BENCHMARKS, Benchmark, load_benchmarks
from bnpo_trl.evaluation.core import evaluate
from bnpo_trl.evaluation.metrics import compare
from bnpo_trl.evaluation.report import format_comparison, format_table
from bnpo_trl.evaluation.vllm_backend import VLLMBackend, require_vllm
from bnpo_trl.models import TINY_PREFIX, load_model, load_tokenizer, resolve_model_path

__all__ = ["EvalArguments", "main", "parse_args"]


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class EvalArguments:
    """The options of ``bnpo-trl eval`` (each a ``--flag`` and a key of a ``--config`` YAML)."""

    model: str | None = _opt(
        None, "Hub id, folder (a PEFT adapter folder is merged) or tiny:<k=v,...>; default: the recipe's."
    )
    benchmarks: str = _opt(",".join(DEFAULT_BENCHMARKS), "Comma-separated names and/or local files.")
    n: int = _opt(4, "Samples per problem.")
    temperature: float = _opt(0.6, "Sampling temperature (0: greedy, needs --n 1).")
    top_p: float = _opt(0.95, "Nucleus sampling.")
    max_new_tokens: int | None = _opt(None, "Default: the recipe's max_completion_length, else 3072.")
    k: str | None = _opt(None, "pass@k values, e.g. 1,4,16 (default 1, 2, 4, ... up to n).")
    backend: Literal["auto", "vllm", "transformers"] = _opt(
        "auto", "auto: vllm if installed and a GPU is visible, else transformers."
    )
    output: str | None = _opt(None, "Output folder (default eval_results/<model name>).")
    limit: int | None = _opt(None, "First K problems of each benchmark.")
    column_map: dict | str | None = field(
        default=None,
        metadata={
            "help": "Columns of local benchmark files not read with a named benchmark's schema, as YAML or JSON: "
            '\'{"problem": "question", "answer": "gold"}\'.'
        },
    )
    baseline: str | None = _opt(None, "A second model, evaluated the same way and compared.")
    recipe: str | None = _opt(
        None, "Training recipe YAML: reuse its system prompt, chat template kwargs, model (also --config)."
    )
    system_prompt: str | None = _opt(None, "Override the system prompt ('none' for none).")
    tokenizer: str | None = _opt(None, "Take the tokenizer (chat template) from here instead of the model.")
    seed: int = _opt(0, "Sampling and bootstrap seed.")
    batch_size: int = _opt(16, "Prompts per generate call (transformers backend).")
    device: str | None = _opt(None, "transformers backend: cuda, cuda:1, cpu (default: cuda if available).")
    dtype: str | None = _opt(None, "Model dtype: auto (default), bfloat16, float16, float32.")
    revision: str | None = _opt(None, "Model revision (branch, tag or commit).")
    trust_remote_code: bool = _opt(False, "Allow the model's own code from the Hub.")
    tensor_parallel_size: int = _opt(1, "vllm: GPUs per model copy.")
    data_parallel_size: int = _opt(1, "vllm: model copies (one worker process each).")
    gpu_memory_utilization: float = _opt(0.9, "vllm: share of each GPU's memory.")
    max_model_len: int | None = _opt(None, "vllm: context length (default: the model's).")
    enforce_eager: bool = _opt(False, "vllm: no CUDA graphs (slower, less memory).")
    verify_workers: int | None = _opt(
        None, "math-verify worker processes of the accuracy reward (default: the reward's, min(2, CPUs))."
    )
    bootstrap: int = _opt(1000, "Bootstrap resamples for the 95%% CIs (0: none).")
    no_progress: bool = _opt(False, "No progress bar.")

    def __post_init__(self) -> None:  # before any model or benchmark is loaded
        from bnpo_trl.arguments import mapping_setting

        self.column_map = mapping_setting(self.column_map, "--column_map")
        checks = [
            (self.n >= 1, f"--n (samples per problem) must be >= 1, got {self.n}"),
            (self.temperature >= 0, f"--temperature must be >= 0, got {self.temperature}"),
            (self.temperature > 0 or self.n == 1, "--temperature 0 is greedy decoding: use --n 1"),
            (0 < self.top_p <= 1, f"--top_p must be in (0, 1], got {self.top_p}"),
            (self.limit is None or self.limit >= 1, f"--limit must be >= 1, got {self.limit}"),
            (self.batch_size >= 1, f"--batch_size must be >= 1, got {self.batch_size}"),
            (self.bootstrap >= 0, f"--bootstrap must be >= 0, got {self.bootstrap}"),
            (self.max_new_tokens is None or self.max_new_tokens >= 1, "--max_new_tokens must be >= 1"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ValueError("; ".join(problems) + ".")


_FIELDS = {f.name for f in dataclasses.fields(EvalArguments)}


def _recipe_given_as_config(argv: list[str]) -> tuple[list[str], str | None]:
    """``--config FILE`` where FILE is a training recipe (keys that are not eval options, or not a
    mapping): -> (argv without it, FILE); an eval config stays in argv for ``TrlParser``."""
    if "--config" not in argv[:-1]:
        return argv, None
    import yaml

    i = argv.index("--config")
    with open(argv[i + 1], encoding="utf-8") as f:
        settings = yaml.safe_load(f)
    if isinstance(settings, dict) and settings and set(settings) <= _FIELDS | {"env"}:
        return argv, None
    return argv[:i] + argv[i + 2 :], argv[i + 1]


def parse_args(argv: Sequence[str]) -> EvalArguments:
    """Flags (and a ``--config`` YAML of eval options, the flags overriding it) -> :class:`EvalArguments`;
    a training recipe given as ``--config`` ends up in ``recipe``."""
    from trl import TrlParser

    argv, recipe = _recipe_given_as_config(list(argv))
    parser = TrlParser(
        (EvalArguments,),
        prog="bnpo-trl eval",
        description="pass@1 / pass@k on math benchmarks, scored by the training `accuracy` reward.",
    )
    try:
        (args,) = parser.parse_args_and_config(args=argv)
    except ValueError as err:  # unknown flags or config keys
        raise SystemExit(f"bnpo-trl eval: {err}") from None
    if recipe is not None:
        if args.recipe is not None and args.recipe != recipe:
            raise SystemExit(f"bnpo-trl eval: two recipes, --config {recipe} and --recipe {args.recipe}.")
        args.recipe = recipe
    return args


def _read_recipe(path: str) -> dict[str, Any]:
    """The settings of a training recipe that decide how prompts are built and scored."""
    import yaml

    with open(path, encoding="utf-8") as f:
        recipe = yaml.safe_load(f) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of settings, got {type(recipe).__name__}.")
    system_prompt = system_prompt_setting(recipe.get("system_prompt", DEFAULT_SYSTEM_PROMPT))
    reward: Any = "accuracy"
    for entry in parse_list(recipe.get("reward_funcs", ["accuracy"]), "reward_funcs"):
        if isinstance(entry, Mapping) and entry.get("name") == "accuracy":
            reward = {k: v for k, v in entry.items() if k != "gold_column"}  # benchmarks use `answer`
    return {
        "model": recipe.get("model_name_or_path"),
        "system_prompt": system_prompt,
        "chat_template_kwargs": recipe.get("chat_template_kwargs") or {},
        "max_new_tokens": recipe.get("max_completion_length"),
        "dtype": recipe.get("dtype"),
        "attn_implementation": recipe.get("attn_implementation"),
        "revision": recipe.get("model_revision"),
        "trust_remote_code": bool(recipe.get("trust_remote_code", False)),
        "max_model_len": recipe.get("vllm_max_model_length"),
        "reward": reward,
    }


def _reward_spec(reward: Any, workers: int | None) -> Any:
    if workers is None:
        return reward
    spec = {"name": "accuracy"} if reward == "accuracy" else dict(reward)
    return {**spec, "workers": workers}


def _slug(model: str) -> str:
    text = model.rstrip("/").replace("tiny:", "tiny-")
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in Path(text).name or text)


def _choose_backend(requested: str) -> str:
    if requested == "vllm":
        require_vllm()
        return "vllm"
    if requested == "transformers":
        return "transformers"
    if importlib.util.find_spec("vllm") is None:
        return "transformers"
    try:
        import torch

        return "vllm" if torch.cuda.is_available() else "transformers"
    except ImportError:
        return "transformers"


def _settle(args: EvalArguments, recipe: Mapping[str, Any]) -> tuple[EvalArguments, list[int] | None]:
    """Fill what the flags left open from the recipe, check the flags; -> (arguments, ks)."""
    model = args.model or recipe.get("model")
    if not model:
        raise SystemExit(
            "bnpo-trl eval: give --model PATH_OR_ID (or a --config recipe with model_name_or_path)."
        )
    system_prompt = args.system_prompt
    if system_prompt is None:
        system_prompt = recipe["system_prompt"]
    elif system_prompt.strip().lower() in ("", "none", "null"):
        system_prompt = None
    max_new_tokens = args.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = int(recipe.get("max_new_tokens") or 3072)
    ks = [int(k) for k in args.k.split(",")] if args.k else None
    if ks and (min(ks) < 1 or max(ks) > args.n):
        raise SystemExit(f"bnpo-trl eval: every --k must be in [1, --n={args.n}], got {ks}.")
    try:
        backend = _choose_backend(args.backend)
    except ImportError as error:
        raise SystemExit(f"bnpo-trl eval: {error}") from None
    settled = dataclasses.replace(
        args, model=model, system_prompt=system_prompt, max_new_tokens=max_new_tokens, backend=backend
    )
    return settled, ks


def _load(model_spec: str, args: EvalArguments, recipe: Mapping[str, Any]) -> tuple[Any, Any, Backend]:
    """-> (model as ``evaluate`` takes it, tokenizer, backend) for ``args.backend``."""
    dtype = args.dtype or recipe.get("dtype") or "auto"
    revision = args.revision or (recipe.get("revision") if model_spec == recipe.get("model") else None)
    trust = args.trust_remote_code or recipe.get("trust_remote_code", False)
    tokenizer = load_tokenizer(args.tokenizer or model_spec, revision=revision, trust_remote_code=trust)
    if args.backend == "vllm":
        backend = VLLMBackend(
            model_spec,
            tokenizer_path=args.tokenizer,
            tensor_parallel_size=args.tensor_parallel_size,
            data_parallel_size=args.data_parallel_size,
            gpu_memory_utilization=args.gpu_memory_utilization,
            max_model_len=args.max_model_len or recipe.get("max_model_len"),
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust,
            enforce_eager=args.enforce_eager,
            show_progress=not args.no_progress,
        )
        return model_spec, tokenizer, backend
    model = load_model(
        model_spec,
        dtype=dtype,
        device=args.device or "auto",
        revision=revision,
        trust_remote_code=trust,
        attn_implementation=recipe.get("attn_implementation"),
    )
    return model, tokenizer, TransformersBackend(model, tokenizer, args.batch_size)


def _free_gpu_memory() -> None:
    with contextlib.suppress(ImportError):
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _evaluate_one(
    model_spec: str,
    args: EvalArguments,
    ks: list[int] | None,
    recipe: Mapping[str, Any],
    benchmarks: Mapping[str, Benchmark],
    samples_path: Path,
) -> dict[str, Any]:
    model, tokenizer, backend = _load(model_spec, args, recipe)
    try:
        return evaluate(
            model,
            tokenizer,
            benchmarks,
            backend=backend,
            n=args.n,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            ks=ks,
            seed=args.seed,
            system_prompt=args.system_prompt,
            chat_template_kwargs=recipe.get("chat_template_kwargs"),
            limit=args.limit,
            reward=_reward_spec(recipe.get("reward", "accuracy"), args.verify_workers),
            samples_path=samples_path,
            progress=not args.no_progress,
            n_bootstrap=args.bootstrap,
            model_name=model_spec,
        )
    finally:
        del model, backend
        _free_gpu_memory()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``bnpo-trl eval ...``: evaluate, print the markdown table, write ``results.json`` and
    ``samples.jsonl`` (``samples_baseline.jsonl`` with ``--baseline``) into ``--output``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    recipe = _read_recipe(args.recipe) if args.recipe else {"system_prompt": DEFAULT_SYSTEM_PROMPT}
    args, ks = _settle(args, recipe)
    for model in filter(None, (args.model, args.baseline)):  # a missing folder fails before anything loads
        if not model.startswith(TINY_PREFIX):
            resolve_model_path(model)
    output = Path(args.output or Path("eval_results") / _slug(args.model))
    output.mkdir(parents=True, exist_ok=True)
    benchmarks = load_benchmarks(
        args.benchmarks, system_prompt=args.system_prompt, limit=args.limit, column_map=args.column_map
    )

    report = _evaluate_one(args.model, args, ks, recipe, benchmarks, output / "samples.jsonl")
    report["metadata"]["command"] = "bnpo-trl eval " + " ".join(argv)
    final: dict[str, Any] = dict(report)
    text = format_table(report)
    if args.baseline:
        baseline = _evaluate_one(
            args.baseline, args, ks, recipe, benchmarks, output / "samples_baseline.jsonl"
        )
        difference = compare(report, baseline, n_bootstrap=args.bootstrap, seed=args.seed)
        final["baseline"] = baseline
        final["difference"] = difference
        text = (
            f"## {args.model}\n\n{text}\n\n## baseline: {args.baseline}\n\n{format_table(baseline)}\n\n"
            f"## difference\n\n{format_comparison(report, baseline, difference)}"
        )
    (output / "results.json").write_text(json.dumps(final, indent=1) + "\n")
    print(text, flush=True)
    print(f"\nWrote {output / 'results.json'} and the samples in {output}/", flush=True)
    return final
