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
) -> Generations:
    """Generate ``num_samples`` completions per prompt (chat messages or plain strings).

    ``temperature=0`` is greedy (then ``num_samples`` must be 1). Prompts are left-padded.
    """
    if temperature == 0 and num_samples != 1:
        raise ValueError("Greedy decoding (temperature=0) gives identical samples: use num_samples=1.")
    texts = [
        tokenizer.apply_chat_template(
            p, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
        )
        if not isinstance(p, str)
        else p
        for p in prompts
    ]
    eos_ids = model.generation_config.eos_token_id
    eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids] if eos_ids is not None else [])
    eos_ids.add(tokenizer.eos_token_id)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    out = Generations([], [], [])
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            batch = {k: v.to(model.device) for k, v in batch.items()}
            sampling = (
                {"do_sample": True, "temperature": temperature, "top_p": top_p}
                if temperature > 0
                else {"do_sample": False}
            )
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                pad_token_id=pad_id,
                eos_token_id=sorted(eos_ids),
                **sampling,
            )
            completion_ids = generated[:, batch["input_ids"].shape[1] :].tolist()
            for i in range(0, len(completion_ids), num_samples):
                samples, lengths, ended = [], [], []
                for ids in completion_ids[i : i + num_samples]:
                    stop = next((k for k, t in enumerate(ids) if t in eos_ids), None)
                    kept = ids if stop is None else ids[:stop]
                    samples.append(tokenizer.decode(kept, skip_special_tokens=True))
                    lengths.append(len(kept) + (stop is not None))
                    ended.append(stop is not None)
                out.texts.append(samples)
                out.lengths.append(lengths)
                out.terminated.append(ended)
            if progress is not None:
                progress(min(batch_size, len(texts) - start))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return out


def heldout_accuracy(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward_func: Callable[..., list[float | None]],
    max_new_tokens: int = 16,
    batch_size: int = 64,
    require_eos: bool = True,
) -> float:
    """Greedy accuracy on ``dataset`` (columns ``prompt`` and ``answer``) scored by ``reward_func``.

    With ``require_eos`` a completion that does not end with EOS within ``max_new_tokens`` counts as wrong.
    Unscorable rows (reward ``None``) count as wrong.
    """
    gens = generate(model, tokenizer, dataset["prompt"], max_new_tokens=max_new_tokens, batch_size=batch_size)
    completions = [[{"role": "assistant", "content": t[0]}] for t in gens.texts]
    columns = {k: dataset[k] for k in dataset.column_names if k not in ("prompt", "completion")}
    scores = reward_func(prompts=dataset["prompt"], completions=completions, completion_ids=None, **columns)
    correct = [
        (s or 0.0) >= 1.0 and (ended[0] or not require_eos)
        for s, ended in zip(scores, gens.terminated, strict=True)
    ]
    return sum(correct) / max(len(correct), 1)
