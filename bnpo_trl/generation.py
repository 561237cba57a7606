"""Batched generation with a transformers model (CPU or GPU), and held-out accuracy with a reward."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Generations:
    """``texts[i][j]``: sample j for prompt i; ``lengths`` in tokens; ``terminated``: ended with EOS."""

    texts: list[list[str]]
    lengths: list[list[int]]
    terminated: list[list[bool]]


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    batch_size: int = 32,
    chat_template_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    top_k: int = 0,
    repetition_penalty: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    sort_by_length: bool = False,
) -> Generations:
    """Generate ``num_samples`` completions per prompt (chat messages or plain strings).

    ``temperature=0`` is greedy (then ``num_samples`` must be 1). Prompts are left-padded; a string prompt
    is used as it is (no chat template, no special tokens added).

    Sampling uses exactly ``temperature``, ``top_p``, ``top_k`` (0: off) and ``repetition_penalty`` (1.0:
    off), whatever the model's ``generation_config`` says (transformers would otherwise add its default
    ``top_k=50`` or a checkpoint's own ``top_k``/``repetition_penalty``); these are the defaults of TRL's
    ``GRPOConfig`` and of vLLM. Generation stops at the model's and tokenizer's EOS ids and at
    ``stop_token_ids``. ``sort_by_length`` batches prompts of similar length together (less padding);
    the output keeps the input order either way. ``progress(k)`` is called after each batch with the
    number of prompts it held.
    """
    _check_settings(num_samples, temperature, top_p, max_new_tokens, batch_size)
    texts = [p if isinstance(p, str) else _chat_text(tokenizer, p, chat_template_kwargs) for p in prompts]
    eos_ids = _stop_ids(model, tokenizer, stop_token_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        pad_id = min(eos_ids)
    order = list(range(len(texts)))
    if sort_by_length:
        sizes = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
        order.sort(key=lambda i: sizes[i])
    sampling = _sampling_kwargs(temperature, top_p, top_k, repetition_penalty)
    results: list[tuple[list[str], list[int], list[bool]] | None] = [None] * len(texts)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=sorted(eos_ids),
                **sampling,
            )
            completion_ids = generated[:, batch["input_ids"].shape[1] :].tolist()
            for position, i in enumerate(chunk):
                rows = completion_ids[position * num_samples : (position + 1) * num_samples]
                results[i] = _decode(tokenizer, rows, eos_ids)
            if progress is not None:
                progress(len(chunk))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    out = Generations([], [], [])
    for samples, lengths, ended in results:  # type: ignore[misc]
        out.texts.append(samples)
        out.lengths.append(lengths)
        out.terminated.append(ended)
    return out


def _check_settings(
    num_samples: int, temperature: float, top_p: float, max_new_tokens: int, batch_size: int
) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}.")
    if temperature == 0 and num_samples != 1:
        raise ValueError("Greedy decoding (temperature=0) gives identical samples: use num_samples=1.")
    if num_samples < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"num_samples, batch_size and max_new_tokens must be >= 1, got {num_samples}, {batch_size}, "
            f"{max_new_tokens}."
        )
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")


def _chat_text(tokenizer: Any, messages: Any, chat_template_kwargs: dict[str, Any] | None) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )


def _sampling_kwargs(temperature: float, top_p: float, top_k: int, repetition_penalty: float) -> dict:
    """``model.generate`` sampling settings that override the model's ``generation_config``."""
    if temperature == 0:
        return {"do_sample": False, "top_k": None, "top_p": None, "temperature": None}
    return {
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
    }


def _stop_ids(model: Any, tokenizer: Any, stop_token_ids: Sequence[int]) -> set[int]:
    """The model's and the tokenizer's EOS ids and ``stop_token_ids``."""
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    eos_ids.update(int(t) for t in stop_token_ids)
    if not eos_ids:
        raise ValueError("Neither the model nor the tokenizer defines an EOS token: pass stop_token_ids.")
    return eos_ids


def _decode(
    tokenizer: Any, rows: list[list[int]], eos_ids: set[int]
) -> tuple[list[str], list[int], list[bool]]:
    """One prompt's samples cut at the first stop id: (texts, lengths with the stop token, ended)."""
    samples, lengths, ended = [], [], []
    for ids in rows:
        stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
        kept = ids if stop is None else ids[:stop]
        samples.append(tokenizer.decode(kept, skip_special_tokens=True))
        lengths.append(len(kept) + (stop is not None))
        ended.append(stop is not None)
    return samples, lengths, ended
