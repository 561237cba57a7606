"""Generation backends: one :class:`Backend` protocol, implemented by :class:`TransformersBackend` (here)
and :class:`~bnpo_trl.evaluation.vllm_backend.VLLMBackend`, so the evaluation never asks which one it has.

A backend gets the prompts of every benchmark at once (:class:`GenerationRequest`, one per benchmark) and
returns one :class:`bnpo_trl.generation.Generations` per request: ``texts``, ``lengths`` and ``terminated``
as ``[prompt][sample]``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bnpo_trl import models

__all__ = [
    "Backend",
    "GenerationRequest",
    "Progress",
    "TransformersBackend",
    "load_model",
    "make_backend",
    "stable_seed",
]

#: Called with the number of completions just finished.
Progress = Callable[[int], None]


def stable_seed(*parts: Any) -> int:
    """A seed from the run seed and names, the same in every process and Python (no ``hash()``).

    >>> stable_seed(0, "math500") == stable_seed(0, "math500") != stable_seed(1, "math500")
    True
    """
    return zlib.crc32(":".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def load_model(spec: str, device: str | None = None, **kwargs: Any) -> Any:
    """:func:`bnpo_trl.models.load_model`, moved to ``device`` (default ``"auto"``: CUDA if available, else
    CPU), ready for :class:`TransformersBackend`."""
    return models.load_model(spec, device=device or "auto", **kwargs)


@dataclass
class GenerationRequest:
    """What a backend generates for one benchmark: templated prompt texts and their token ids, the
    benchmark's sampling seed (transformers) and one seed per prompt (vLLM)."""

    benchmark: str
    texts: list[str]
    token_ids: list[list[int]]
    seed: int
    prompt_seeds: list[int] = field(default_factory=list)


@runtime_checkable
class Backend(Protocol):
    """What :func:`~bnpo_trl.evaluation.evaluate` needs from a generation backend.

    ``sampling`` holds ``n`` (samples per prompt), ``temperature``, ``top_p``, ``top_k`` (0),
    ``repetition_penalty`` (1.0), ``max_new_tokens`` and ``stop_token_ids``; ``seed`` is the run seed.
    """

    name: str

    def context_length(self) -> int | None:
        """The model's context in tokens (prompt + completion), ``None`` when unknown."""
        ...

    def device(self) -> str:
        """Where it runs, for the report's metadata."""
        ...

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: Mapping[str, Any],
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[Any]:
        """One ``Generations`` per request, in order."""
        ...


class TransformersBackend:
    """Batched ``model.generate`` (:func:`bnpo_trl.generation.generate`); CPU or GPU.

    Sampling is seeded per benchmark (from the run seed and the benchmark name) inside
    ``torch.random.fork_rng``, so a benchmark's samples do not depend on the other benchmarks of the run
    and the caller's random state (a training run's) is left as it was.
    """

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 16) -> None:
        if isinstance(model, str):
            raise TypeError(
                "TransformersBackend needs a loaded model; use bnpo_trl.evaluation.load_model(path) first."
            )
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def device(self) -> str:
        device = str(getattr(self.model, "device", "cpu"))
        if device.startswith("cuda"):
            import torch

            return f"{device} ({torch.cuda.get_device_name(self.model.device)})"
        return device

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: Mapping[str, Any],
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[Any]:
        """Generate benchmark by benchmark; ``seed`` is unused (each request carries its own)."""
        import torch

        from bnpo_trl.generation import generate

        n = sampling["n"]
        out = []
        devices = [self.model.device] if str(self.model.device).startswith("cuda") else []
        for request in requests:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(request.seed)
                out.append(
                    generate(
                        self.model,
                        self.tokenizer,
                        request.texts,
                        num_samples=n,
                        temperature=sampling["temperature"],
                        top_p=sampling["top_p"],
                        max_new_tokens=sampling["max_new_tokens"],
                        batch_size=self.batch_size,
                        stop_token_ids=sampling["stop_token_ids"],
                        sort_by_length=True,
                        progress=(lambda k: progress(k * n)) if progress is not None else None,
                    )
                )
        return out


def _transformers(model: Any, tokenizer: Any, batch_size: int, progress: bool) -> Backend:
    return TransformersBackend(model, tokenizer, batch_size=batch_size)


def _vllm(model: Any, tokenizer: Any, batch_size: int, progress: bool) -> Backend:
    from bnpo_trl.evaluation.vllm_backend import VLLMBackend

    return VLLMBackend(model, show_progress=progress)


_FACTORIES: dict[str, Callable[[Any, Any, int, bool], Backend]] = {
    "transformers": _transformers,
    "vllm": _vllm,
}


def make_backend(
    backend: str | Backend, model: Any, tokenizer: Any, batch_size: int = 16, progress: bool = True
) -> Backend:
    """A backend object from its name (``"transformers"``: a loaded model; ``"vllm"``: a model id or
    folder), with default settings; a backend object is returned as it is."""
    if not isinstance(backend, str):
        return backend
    factory = _FACTORIES.get(backend)
    if factory is None:
        raise ValueError(f"Unknown backend {backend!r}; use 'transformers' or 'vllm'.")
    return factory(model, tokenizer, batch_size, progress)
