"""Judging the completions of a run: the reward's scores and verdicts, the per-benchmark metrics, and the
``samples.jsonl`` rows (one per completion)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bnpo_trl.answers import last_boxed
from bnpo_trl.evaluation.backends import GenerationRequest
from bnpo_trl.evaluation.benchmarks import Benchmark
from bnpo_trl.evaluation.metrics import benchmark_metrics
from bnpo_trl.evaluation.voting import majority_correct

logger = logging.getLogger(__name__)

__all__ = ["Judged", "judge", "resolve_reward", "score_benchmarks", "score_completions"]


def resolve_reward(reward: Any) -> tuple[Callable[..., Any], str]:
    """A reward function and the name recorded in the metadata, from a function or a registry spec."""
    if callable(reward):
        return reward, getattr(reward, "__name__", type(reward).__name__)
    from bnpo_trl.rewards import get_reward_funcs

    return get_reward_funcs([reward])[0], json.dumps(reward) if not isinstance(reward, str) else reward


def _derived_verdict(score: float | None, text: str) -> str:
    if score is None:
        return "unscored"
    if score >= 1.0:
        return "correct"
    return "no_answer" if last_boxed(text) is None else "wrong"


def score_completions(
    reward_func: Callable[..., Any], prompts: list, golds: list[str], texts: list[str]
) -> tuple[list, list[str]]:
    """Scores and verdicts of completions with a reward function (TRL's calling convention)."""
    captured: dict[str, list] = {}

    def log_extra(key: str, values: list) -> None:
        captured[key] = list(values)

    scores = reward_func(
        prompts=prompts,
        completions=[[{"role": "assistant", "content": t}] for t in texts],
        completion_ids=None,
        answer=golds,
        log_extra=log_extra,
        log_metric=lambda key, value: None,
    )
    if len(scores) != len(texts):
        raise RuntimeError(f"The reward returned {len(scores)} scores for {len(texts)} completions.")
    verdict_keys = [k for k in captured if k.endswith("_verdict")]
    if len(verdict_keys) == 1 and len(captured[verdict_keys[0]]) == len(texts):
        verdicts = [str(v) for v in captured[verdict_keys[0]]]
    else:  # a reward without verdicts: derive them from the scores and the boxed answer
        verdicts = [_derived_verdict(s, t) for s, t in zip(scores, texts, strict=True)]
    return scores, verdicts


@dataclass
class Judged:
    """One benchmark's completions, judged: flat ``[problem * n + sample]`` lists, and the gold answers."""

    golds: list[str]
    texts: list[str]
    verdicts: list[str]
    correct: list[bool]


def judge(
    reward_func: Callable[..., Any], bench: Benchmark, gens: Any, n: int, require_eos: bool = False
) -> Judged:
    """Score every completion of one benchmark (``gens``: :class:`bnpo_trl.generation.Generations`); with
    ``require_eos`` a completion that did not end within the token budget counts as wrong."""
    golds = [str(a) for a in bench.dataset["answer"]]
    prompts = list(bench.dataset["prompt"])
    texts = [t for row in gens.texts for t in row]
    flat_golds = [g for g in golds for _ in range(n)]
    flat_prompts = [p for p in prompts for _ in range(n)]
    scores, verdicts = score_completions(reward_func, flat_prompts, flat_golds, texts)
    ended = [e or not require_eos for row in gens.terminated for e in row]
    correct = [s is not None and s >= 1.0 and e for s, e in zip(scores, ended, strict=True)]
    return Judged(golds, texts, verdicts, correct)


def _rows(flat: list, n: int) -> list[list]:
    return [flat[i : i + n] for i in range(0, len(flat), n)]


def _extraction(text: str, verdict: str) -> tuple[str | None, str]:
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip(), "boxed"
    if verdict in ("correct", "wrong"):
        return None, "anchored"  # math-verify found "final answer is ..." / "Answer: ..." (not exposed)
    return None, "none"


def _result(
    name: str,
    bench: Benchmark,
    judged: Judged,
    gens: Any,
    n: int,
    ks: Sequence[int] | None,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Any]:
    correct = _rows(judged.correct, n)
    majority = majority_correct(_rows(judged.texts, n), correct) if n > 1 else None
    metrics = benchmark_metrics(
        correct, gens.lengths, _rows(judged.verdicts, n), gens.terminated, ks, n_bootstrap, seed, majority
    )
    digest = hashlib.sha256(json.dumps([bench.problems, judged.golds]).encode()).hexdigest()
    if metrics["unscored_rate"]:
        logger.warning(
            "%s: %.1f%% of completions could not be scored (gold answer not parsable); they count as wrong.",
            name,
            100 * metrics["unscored_rate"],
        )
    return {"source": bench.source, **metrics, "dropped_rows": bench.dropped, "problems_sha256": digest}


def _sample_rows(
    model_name: str | None, name: str, bench: Benchmark, judged: Judged, gens: Any, n: int
) -> Iterator[dict[str, Any]]:
    for i, problem in enumerate(bench.problems):
        for j in range(n):
            flat = i * n + j
            extracted, how = _extraction(judged.texts[flat], judged.verdicts[flat])
            yield {
                "model": model_name,
                "benchmark": name,
                "problem_index": i,
                "sample_index": j,
                "problem": problem,
                "gold": judged.golds[i],
                "completion": judged.texts[flat],
                "extracted": extracted,
                "extraction": how,
                "verdict": judged.verdicts[flat],
                "correct": judged.correct[flat],
                "length": gens.lengths[i][j],
                "terminated": gens.terminated[i][j],
            }


def score_benchmarks(
    requests: Sequence[GenerationRequest],
    generations: Sequence[Any],
    benchmarks: Mapping[str, Benchmark],
    reward_func: Callable[..., Any],
    *,
    n: int,
    ks: Sequence[int] | None,
    n_bootstrap: int,
    seed: int,
    model_name: str | None,
    samples_path: str | os.PathLike[str] | None,
    require_eos: bool = False,
) -> dict[str, Any]:
    """Per benchmark, its result (metrics, source, ``problems_sha256``); writes ``samples_path`` if given."""
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        sample_file = (
            stack.enter_context(open(samples_path, "w", encoding="utf-8"))
            if samples_path is not None
            else None
        )
        for request, gens in zip(requests, generations, strict=True):
            bench = benchmarks[request.benchmark]
            judged = judge(reward_func, bench, gens, n, require_eos)
            results[request.benchmark] = _result(
                request.benchmark, bench, judged, gens, n, ks, n_bootstrap, seed
            )
            if sample_file is not None:
                for row in _sample_rows(model_name, request.benchmark, bench, judged, gens, n):
                    sample_file.write(json.dumps(row, ensure_ascii=False) + "\n")
    return results
