"""Evaluation inside a distributed training run: every rank generates its share of the prompts with the
model as the trainer holds it (DDP, DeepSpeed ZeRO-2/3, FSDP2) and every rank gets all the results.

Generation goes through TRL's own context (``unwrap_model_for_generation`` — which gathers ZeRO-3
parameters — and ``summon_full_params`` for FSDP), as ``GRPOTrainer`` does for its rollouts. Each rank's
share has the same length (the last prompt repeats, dropped after the gather), so every rank makes the same
number of ``generate`` calls: under ZeRO-3 and FSDP transformers runs them in lockstep (``synced_gpus``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bnpo_trl.evaluation.backends import GenerationRequest, Progress, TransformersBackend, stable_seed
from bnpo_trl.generation import Generations

__all__ = ["TrainerBackend", "rank_share"]


def rank_share(n_prompts: int, rank: int, world: int) -> list[int]:
    """The prompt indices rank ``rank`` of ``world`` generates: every ``world``-th one from ``rank``,
    padded with its last index to ``ceil(n_prompts / world)`` entries (prompts 0.. when it has none).

    >>> rank_share(5, 0, 2), rank_share(5, 1, 2), rank_share(1, 1, 2)
    ([0, 2, 4], [1, 3, 3], [0])
    """
    share = -(-n_prompts // world)
    indices = list(range(rank, n_prompts, world)) or [0] * share
    return indices + indices[-1:] * (share - len(indices))


class TrainerBackend:
    """The :class:`~bnpo_trl.evaluation.backends.Backend` of a training run on several ranks (see the module
    docstring); every rank must call :meth:`generate` with the same requests."""

    name = "transformers"

    def __init__(self, trainer: Any, tokenizer: Any, batch_size: int = 16) -> None:
        self.trainer, self.tokenizer, self.batch_size = trainer, tokenizer, batch_size

    def context_length(self) -> int | None:
        return getattr(self.trainer.model.config, "max_position_embeddings", None)

    def device(self) -> str:
        return f"{self.trainer.accelerator.device} × {self.trainer.accelerator.num_processes} ranks"

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: Mapping[str, Any],
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[Generations]:
        from accelerate.utils import gather_object
        from trl.models import unwrap_model_for_generation

        trainer = self.trainer
        rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
        shares = [rank_share(len(r.texts), rank, world) for r in requests]
        local = [
            GenerationRequest(
                r.benchmark,
                [r.texts[i] for i in share],
                [r.token_ids[i] for i in share],
                stable_seed(r.seed, "rank", rank),
            )
            for r, share in zip(requests, shares, strict=True)
        ]
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ) as model,
            torch.no_grad(),
            trainer._dist.summon_full_params(trainer.model_wrapped, recurse=False),
        ):
            was_training = model.training
            model.eval()
            try:
                mine = TransformersBackend(model, self.tokenizer, self.batch_size).generate(local, sampling)
            finally:
                model.train(was_training)
        every_rank = gather_object([mine])  # [rank][request]: a collective, in rank order
        out = []
        for j, request in enumerate(requests):
            texts: list[Any] = [None] * len(request.texts)
            lengths, ended = list(texts), list(texts)
            for k in range(world):
                gen = every_rank[k][j]
                for t, i in enumerate(range(k, len(request.texts), world)):  # the padding is left out
                    texts[i], lengths[i], ended[i] = gen.texts[t], gen.lengths[t], gen.terminated[t]
            out.append(Generations(texts, lengths, ended))
            if progress is not None:
                progress(len(request.texts) * sampling["n"])
        return out
