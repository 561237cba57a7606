"""The vLLM backend (GPU): vLLM offline inference in worker processes (``_vllm_worker.py``, run as a
script), one per data-parallel shard, and the helpers that build its arguments."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bnpo_trl.evaluation.backends import GenerationRequest, Progress
from bnpo_trl.models import resolve_model_path

__all__ = [
    "VLLM_INSTALL_HINT",
    "VLLMBackend",
    "plan_data_parallel",
    "require_vllm",
    "vllm_llm_kwargs",
    "vllm_sampling_kwargs",
]

VLLM_INSTALL_HINT = (
    'pip install "bnpo-trl[vllm]" (the `vllm` extra; vLLM needs a CUDA GPU), or use --backend transformers'
)

_WORKER = Path(__file__).with_name("_vllm_worker.py")


def require_vllm() -> str:
    """vLLM's version; a clear ``ImportError`` naming the ``vllm`` extra when it is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(f"--backend vllm needs vLLM, which is not installed: {VLLM_INSTALL_HINT}.")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm")
    except PackageNotFoundError:
        import vllm

        return str(getattr(vllm, "__version__", "unknown"))


def vllm_llm_kwargs(
    model: str,
    tokenizer: str | None = None,
    tensor_parallel_size: int = 1,
    dtype: str | None = "auto",
    seed: int = 0,
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    enforce_eager: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM(...)`` for one data-parallel shard.

    >>> vllm_llm_kwargs("Qwen/Qwen2.5-Math-7B", tensor_parallel_size=2, max_model_len=4096)["max_model_len"]
    4096
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}.")
    if not 0 < gpu_memory_utilization <= 1:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}.")
    kwargs: dict[str, Any] = {
        "model": model,
        "tokenizer": tokenizer or model,
        "tensor_parallel_size": tensor_parallel_size,
        "dtype": dtype or "auto",
        "seed": seed,
        "gpu_memory_utilization": gpu_memory_utilization,
        "trust_remote_code": trust_remote_code,
        "enforce_eager": enforce_eager,
    }
    if max_model_len is not None:
        kwargs["max_model_len"] = max_model_len
    if revision is not None:
        kwargs["revision"] = revision
    return kwargs


def vllm_sampling_kwargs(
    n: int, temperature: float, top_p: float, max_new_tokens: int, stop_token_ids: Sequence[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams(...)`` (a per-prompt ``seed`` is added by the worker);
    the same sampling as the transformers backend: no top-k, no repetition penalty.

    >>> kwargs = vllm_sampling_kwargs(4, 0.6, 0.95, 3072, [151645])
    >>> kwargs["n"], kwargs["temperature"], kwargs["top_p"], kwargs["max_tokens"], kwargs["stop_token_ids"]
    (4, 0.6, 0.95, 3072, [151645])
    """
    if temperature == 0 and n != 1:
        raise ValueError("Greedy decoding (temperature=0) gives identical samples: use n=1.")
    return {
        "n": n,
        "temperature": float(temperature),
        "top_p": float(top_p) if temperature > 0 else 1.0,
        "max_tokens": int(max_new_tokens),
        "stop_token_ids": [int(t) for t in stop_token_ids],
        "skip_special_tokens": True,
    }


def _visible_devices() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def plan_data_parallel(
    n_prompts: int, data_parallel_size: int, tensor_parallel_size: int, devices: Sequence[str]
) -> list[dict[str, Any]]:
    """Split ``n_prompts`` into ``data_parallel_size`` contiguous shards, each on its own
    ``tensor_parallel_size`` GPUs: ``[{"devices": "0,1", "start": 0, "stop": 250}, ...]``.

    >>> plan_data_parallel(5, 2, 2, ["0", "1", "2", "3"])
    [{'devices': '0,1', 'start': 0, 'stop': 3}, {'devices': '2,3', 'start': 3, 'stop': 5}]
    """
    if data_parallel_size < 1 or tensor_parallel_size < 1:
        raise ValueError("data_parallel_size and tensor_parallel_size must be >= 1.")
    needed = data_parallel_size * tensor_parallel_size
    if len(devices) < needed:
        raise ValueError(
            f"data_parallel_size={data_parallel_size} x tensor_parallel_size={tensor_parallel_size} needs "
            f"{needed} GPUs, {len(devices)} visible ({','.join(devices) or 'none'}); lower one of them."
        )
    shards = min(data_parallel_size, max(n_prompts, 1))
    base, extra = divmod(n_prompts, shards)
    plan, start = [], 0
    for rank in range(shards):
        stop = start + base + (rank < extra)
        group = devices[rank * tensor_parallel_size : (rank + 1) * tensor_parallel_size]
        plan.append({"devices": ",".join(group), "start": start, "stop": stop})
        start = stop
    return plan


def _run_workers(shards: Sequence[tuple[dict[str, Any], dict[str, str]]]) -> dict[str, list]:
    """Run one worker process per shard (all at once) and concatenate their outputs in shard order."""
    merged: dict[str, list] = {"texts": [], "lengths": [], "terminated": []}
    with tempfile.TemporaryDirectory(prefix="bnpo_eval_vllm_") as tmp:
        procs = []
        for rank, (spec, env) in enumerate(shards):
            spec_path, out_path = Path(tmp) / f"spec{rank}.json", Path(tmp) / f"out{rank}.json"
            spec_path.write_text(json.dumps(spec))
            command = [sys.executable, str(_WORKER), str(spec_path), str(out_path)]
            procs.append((subprocess.Popen(command, env={**os.environ, **env}), out_path, env))
        failures = []
        for rank, (proc, out_path, env) in enumerate(procs):
            code = proc.wait()
            if code != 0 or not out_path.is_file():
                failures.append(f"shard {rank} ({env or 'all visible GPUs'}) exited with code {code}")
                continue
            part = json.loads(out_path.read_text())
            for key, values in merged.items():
                values.extend(part[key])
    if failures:
        raise RuntimeError(
            "vLLM generation failed: " + "; ".join(failures) + ". Its error is printed above "
            "(out of memory: lower --gpu_memory_utilization or --max_model_len, or raise "
            "--tensor_parallel_size)."
        )
    return merged


class VLLMBackend:
    """vLLM offline inference (GPU), in worker processes: one per data-parallel shard, each on its own
    ``tensor_parallel_size`` GPUs (``CUDA_VISIBLE_DEVICES``). The prompts go in as the same token ids as
    the transformers backend's (chat template applied here, no special tokens added by vLLM), and every
    prompt has its own sampling seed, so samples do not depend on batching or on the number of shards.
    The worker processes exit after generating, which frees the GPUs for a ``--baseline`` model."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tokenizer_path: str | None = None,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        dtype: str | None = "auto",
        revision: str | None = None,
        trust_remote_code: bool = False,
        enforce_eager: bool = False,
        show_progress: bool = True,
    ) -> None:
        if not isinstance(model, str):
            raise TypeError("The vllm backend takes the model as a Hub id or a folder path (a string).")
        self.version = require_vllm()
        self.model = resolve_model_path(model)
        self.llm_kwargs = vllm_llm_kwargs(
            self.model,
            tokenizer=resolve_model_path(tokenizer_path) if tokenizer_path else None,
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            revision=revision,
            trust_remote_code=trust_remote_code,
            enforce_eager=enforce_eager,
        )
        self.data_parallel_size = data_parallel_size
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.show_progress = show_progress
        if data_parallel_size > 1:  # fail now, not after the prompts are built, when GPUs are missing
            plan_data_parallel(
                data_parallel_size, data_parallel_size, tensor_parallel_size, _visible_devices()
            )

    def context_length(self) -> int | None:
        if self.max_model_len is not None:
            return self.max_model_len
        try:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(
                self.model, trust_remote_code=self.llm_kwargs["trust_remote_code"]
            )
        except Exception:  # vLLM reads it itself and will complain if it must
            return None
        return getattr(config, "max_position_embeddings", None)

    def device(self) -> str:
        return f"vllm {self.version}, {self.data_parallel_size} x {self.tensor_parallel_size} GPU(s)"

    def worker_specs(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any], seed: int
    ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """One (spec, environment changes) per shard; the spec is the worker's JSON input."""
        prompts = [ids for r in requests for ids in r.token_ids]
        seeds = [s for r in requests for s in r.prompt_seeds]
        params = vllm_sampling_kwargs(
            sampling["n"],
            sampling["temperature"],
            sampling["top_p"],
            sampling["max_new_tokens"],
            sampling["stop_token_ids"],
        )
        if self.data_parallel_size > 1:
            plan = plan_data_parallel(
                len(prompts), self.data_parallel_size, self.tensor_parallel_size, _visible_devices()
            )
        else:  # one worker on the GPUs this process sees
            plan = [{"devices": None, "start": 0, "stop": len(prompts)}]
        out = []
        for rank, shard in enumerate(plan):
            spec = {
                "llm": {**self.llm_kwargs, "seed": seed + rank},
                "sampling": params,
                "seeds": seeds[shard["start"] : shard["stop"]],
                "prompt_token_ids": prompts[shard["start"] : shard["stop"]],
                "progress": self.show_progress and rank == 0,
            }
            env = {"CUDA_VISIBLE_DEVICES": shard["devices"]} if shard["devices"] is not None else {}
            out.append((spec, env))
        return out

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        sampling: Mapping[str, Any],
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[Any]:
        """Generate every request in one pass over the shards; progress is reported at the end (the
        workers show vLLM's own bar)."""
        from bnpo_trl.generation import Generations

        merged = _run_workers(self.worker_specs(requests, sampling, seed))
        out, start = [], 0
        for request in requests:
            stop = start + len(request.token_ids)
            out.append(Generations(*(merged[key][start:stop] for key in ("texts", "lengths", "terminated"))))
            start = stop
        if progress is not None:
            progress(start * sampling["n"])
        return out
