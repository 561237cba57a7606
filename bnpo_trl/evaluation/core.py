""":func:`evaluate`: load the benchmarks, build the prompts as training does, generate with a backend,
judge with the training reward and report (see ``docs/evaluation.md``)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bnpo_trl.data import DEFAULT_SYSTEM_PROMPT
from bnpo_trl.evaluation.backends import Backend, GenerationRequest, make_backend, stable_seed
from bnpo_trl.evaluation.benchmarks import Benchmark, as_benchmarks
from bnpo_trl.evaluation.metrics import average_pass_at_k
from bnpo_trl.evaluation.report import run_metadata
from bnpo_trl.evaluation.scoring import resolve_reward, score_benchmarks
from bnpo_trl.models import end_of_turn_token_ids

__all__ = ["build_requests", "evaluate"]


def _check_settings(tokenizer: Any, n: int, temperature: float) -> None:
    if n < 1:
        raise ValueError(f"n (samples per problem) must be >= 1, got {n}.")
    if temperature == 0 and n != 1:
        raise ValueError("temperature=0 is greedy decoding, which gives n identical samples: use --n 1.")
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "The tokenizer has no chat template, so the prompts cannot be built as in training; load a "
            "tokenizer that has one (--tokenizer PATH_OR_ID)."
        )


def build_requests(
    tokenizer: Any,
    benchmarks: Mapping[str, Benchmark],
    chat_template_kwargs: Mapping[str, Any] | None,
    max_new_tokens: int,
    context: int | None,
    seed: int,
) -> list[GenerationRequest]:
    """One request per benchmark: its prompts through the chat template, as text and token ids, checked
    against the model's ``context``; seeded from the run seed and the benchmark name (and prompt index)."""
    requests = []
    for name, bench in benchmarks.items():
        texts = [
            tokenizer.apply_chat_template(
                list(p), tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
            )
            for p in bench.dataset["prompt"]
        ]
        token_ids = [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        longest = max(len(ids) for ids in token_ids)
        if context is not None and longest + max_new_tokens > context:
            raise ValueError(
                f"{name}: the longest prompt has {longest} tokens; with max_new_tokens={max_new_tokens} it "
                f"exceeds the model's context of {context} tokens. Lower --max_new_tokens to at most "
                f"{context - longest}."
            )
        prompt_seeds = [stable_seed(seed, name, i) for i in range(len(texts))]
        requests.append(GenerationRequest(name, texts, token_ids, stable_seed(seed, name), prompt_seeds))
    return requests


def _sampling(
    tokenizer: Any,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    stop_token_ids: Sequence[int] | None,
) -> dict[str, Any]:
    """What every backend samples with: no top-k, no repetition penalty, and the end-of-turn stop token."""
    _check_settings(tokenizer, n, temperature)
    stops = end_of_turn_token_ids(tokenizer) if stop_token_ids is None else [int(t) for t in stop_token_ids]
    return {
        "n": n,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": 0,
        "repetition_penalty": 1.0,
        "max_new_tokens": max_new_tokens,
        "stop_token_ids": stops,
    }


def _generate(
    backend: Backend,
    requests: Sequence[GenerationRequest],
    sampling: Mapping[str, Any],
    seed: int,
    model_name: str | None,
    progress: bool,
) -> list[Any]:
    from tqdm.auto import tqdm

    label = f"generating ({model_name or 'model'})"

    total = sum(len(r.texts) for r in requests) * sampling["n"]
    bar = tqdm(total=total, desc=label, unit="completion", dynamic_ncols=True, disable=not progress)
    try:
        return backend.generate(requests, sampling, seed=seed, progress=bar.update)
    finally:
        bar.close()


def evaluate(
    model: Any,
    tokenizer: Any,
    benchmarks: str | Sequence[str] | Mapping[str, Any],
    n: int = 4,
    *,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 3072,
    ks: Sequence[int] | None = None,
    backend: str | Backend = "transformers",
    batch_size: int = 16,
    seed: int = 0,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    limit: int | None = None,
    reward: Any = "accuracy",
    samples_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    n_bootstrap: int = 1000,
    model_name: str | None = None,
    stop_token_ids: Sequence[int] | None = None,
    require_eos: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on benchmarks; returns ``{"metadata", "results", "average"}``.

    Args:
        model: A loaded transformers model (backend ``transformers``), or its Hub id or folder (``vllm``).
        tokenizer: The model's tokenizer; its chat template renders the prompts.
        benchmarks: Names and/or local files (:func:`~bnpo_trl.evaluation.parse_benchmark_specs`), or a
            mapping name -> ``Benchmark`` or ``datasets.Dataset`` (the bnpo_trl.data column contract).
        n, temperature, top_p, max_new_tokens: Samples per problem and sampling (``temperature=0``: greedy,
            then ``n`` must be 1), the completion budget; prompt + budget must fit the model's context.
        ks: The k of pass@k (default :func:`default_ks`; above ``n``: dropped; pass@1 always).
        backend: ``"transformers"``, ``"vllm"`` or a :class:`~bnpo_trl.evaluation.backends.Backend` object.
        batch_size, seed: Prompts per ``generate`` call (transformers); the sampling and bootstrap seed.
        system_prompt: System message of benchmarks loaded here (names, files); default training's; None: none.
        chat_template_kwargs, limit: Extra arguments of ``apply_chat_template`` (the recipe's); keep the
            first ``limit`` problems of each benchmark.
        reward: The reward judging completions: a registry spec (``"accuracy"``,
            ``{"name": "accuracy", "timeout": 10}``) or a function with TRL's reward signature.
        samples_path: Write one JSON line per completion there (see ``docs/evaluation.md``).
        progress, n_bootstrap, model_name: Show a progress bar (stderr); bootstrap resamples for the
            confidence intervals (0: none); the name recorded in the metadata.
        stop_token_ids, require_eos: Extra stop tokens (default: the chat template's end-of-turn token);
            count a completion that did not stop within ``max_new_tokens`` as wrong (as the held-out check).
    """
    started = time.perf_counter()
    sampling = _sampling(tokenizer, n, temperature, top_p, max_new_tokens, stop_token_ids)  # checks them
    loaded = as_benchmarks(benchmarks, system_prompt, limit)
    backend = make_backend(backend, model, tokenizer, batch_size=batch_size, progress=progress)
    reward_func, reward_name = resolve_reward(reward)
    context = backend.context_length()
    requests = build_requests(tokenizer, loaded, chat_template_kwargs, max_new_tokens, context, seed)
    generations = _generate(backend, requests, sampling, seed, model_name, progress)
    scoring = {"n": n, "ks": ks, "n_bootstrap": n_bootstrap, "seed": seed, "require_eos": require_eos}
    results = score_benchmarks(
        requests,
        generations,
        loaded,
        reward_func,
        **scoring,
        model_name=model_name,
        samples_path=samples_path,
    )
    metadata = run_metadata(
        model_name=model_name or (model if isinstance(model, str) else type(model).__name__),
        backend=backend,
        sampling=sampling,
        seed=seed,
        ks=sorted({int(key[5:]) for r in results.values() for key in r["pass@k"]}),
        limit=limit,
        benchmarks=loaded,
        tokenizer=tokenizer,
        chat_template_kwargs=chat_template_kwargs,
        reward_name=reward_name,
        n_bootstrap=n_bootstrap,
        seconds=time.perf_counter() - started,
    )
    return {"metadata": metadata, "results": results, "average": average_pass_at_k(results)}
