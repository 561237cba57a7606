"""The distributed engine a run really uses (DDP, DeepSpeed ZeRO-n, FSDP2), read from the prepared model
and accelerator, and a loud error when it is not the one the launch asked for.

Why this exists: accelerate switches to FSDP only from GPU-type distributed modes, so an FSDP config on
CPU ranks (and ``fsdp: full_shard`` in a recipe there) trains as plain DDP without a word, and a
``deepspeed:`` setting that accelerate did not act on would do the same. :func:`check_engine` (from the trainer's
constructor, before any step) turns that into an error; :class:`EngineCallback` logs, at the start of
training, one line such as ``engine: DeepSpeed ZeRO-3, 2 processes, gloo``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = [
    "Engine",
    "EngineCallback",
    "EngineMismatchError",
    "check_engine",
    "engine_in_use",
    "requested_engine",
]


class EngineMismatchError(RuntimeError):
    """The launch asked for DeepSpeed or FSDP and the run was set up with another engine."""


@dataclass(frozen=True)
class Engine:
    """What trains the model: ``name`` ("DDP", "DeepSpeed ZeRO-3", "FSDP2", "single process"), the number
    of processes, the process group's backend (None without a group) and the share of the model's
    parameter values this rank holds (``local_fraction``: 1.0 unless the parameters are sharded)."""

    name: str
    processes: int
    backend: str | None
    local_fraction: float = 1.0

    @property
    def sharded(self) -> bool:
        return self.local_fraction < 1.0

    def __str__(self) -> str:
        plural = "process" if self.processes == 1 else "processes"
        backend = f", {self.backend}" if self.backend else ""
        return f"{self.name}, {self.processes} {plural}{backend}"

    def to_dict(self) -> dict[str, Any]:
        """For the run summary."""
        return {**asdict(self), "sharded": self.sharded}


def _local_fraction(params: list[Any]) -> float:
    """Parameter values held here / in the whole model: ZeRO-3 keeps this rank's partition in ``ds_tensor``
    (``ds_numel`` is the full size); an FSDP2 parameter is a ``DTensor`` whose local shard is ``to_local()``."""
    local = total = 0
    for p in params:
        if hasattr(p, "ds_numel"):
            local, total = local + p.ds_tensor.numel(), total + p.ds_numel
        elif hasattr(p, "to_local"):
            local, total = local + p.to_local().numel(), total + p.numel()
        else:
            local, total = local + p.numel(), total + p.numel()
    return local / total if total else 1.0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def requested_engine(args: Any) -> str | None:
    """``"deepspeed"``, ``"fsdp"`` or None: what the launch asked for, from accelerate's launcher variables
    (``ACCELERATE_USE_DEEPSPEED`` / ``ACCELERATE_USE_FSDP``, set from the accelerate config) or the
    training arguments (``deepspeed:``, ``fsdp:``)."""
    if _env_flag("ACCELERATE_USE_DEEPSPEED") or getattr(args, "deepspeed", None):
        return "deepspeed"
    if _env_flag("ACCELERATE_USE_FSDP") or getattr(args, "fsdp", None):
        return "fsdp"
    return None


def _backend() -> str | None:
    dist = torch.distributed
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def engine_in_use(accelerator: Any, model: Any = None) -> Engine:
    """The engine from the accelerator's state and, when given, the prepared model (a ``DeepSpeedEngine``
    reports its stage; FSDP2 parameters are ``DTensor`` shards; ZeRO-3 parameters are partitioned)."""
    from accelerate.utils import DistributedType

    kind, n = accelerator.distributed_type, accelerator.num_processes
    fraction = _local_fraction(list(model.parameters())) if model is not None else 1.0
    if kind == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.zero_stage
        if model is not None and hasattr(model, "zero_optimization_stage"):
            stage = model.zero_optimization_stage()
        return Engine(f"DeepSpeed ZeRO-{stage}", n, _backend(), fraction)
    if kind == DistributedType.FSDP:
        version = getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1)
        return Engine(f"FSDP{version}", n, _backend(), fraction)
    return Engine("DDP" if n > 1 else "single process", n, _backend(), fraction)


def check_engine(accelerator: Any, args: Any) -> None:
    """Raise :class:`EngineMismatchError` when the launch asked for DeepSpeed or FSDP and the accelerator
    was set up for something else (it would silently train as DDP or alone)."""
    from accelerate.utils import DistributedType

    wanted, got = requested_engine(args), accelerator.distributed_type
    if wanted == "deepspeed" and got != DistributedType.DEEPSPEED:
        raise EngineMismatchError(
            f"The launch asked for DeepSpeed but accelerate set the run up as {got.value} "
            f"({engine_in_use(accelerator).name}), which would train without DeepSpeed. accelerate drops "
            "DeepSpeed when the environment says ACCELERATE_USE_CPU=1: unset it (on CPU ranks the recipe's "
            "use_cpu: true is enough; see configs/accelerate/cpu/). Also check that deepspeed is installed "
            "(pip install 'bnpo-trl[deepspeed]') and that the accelerate config says distributed_type: "
            "DEEPSPEED; or launch with a DDP config."
        )
    if wanted == "fsdp" and got != DistributedType.FSDP:
        raise EngineMismatchError(
            f"The launch asked for FSDP but accelerate set the run up as {got.value} "
            f"({engine_in_use(accelerator).name}), which would train as plain data parallelism. accelerate "
            "switches to FSDP only on GPU ranks (not with use_cpu or on a machine without GPUs): run FSDP on "
            "GPUs, or launch with a DDP or DeepSpeed config (docs/engines.md: how the tests run FSDP2 on CPU "
            "ranks)."
        )


class EngineCallback(TrainerCallback):
    """At the start of training, log the engine read from the prepared model (``engine: ...``) and keep it
    in ``engine`` (the run summary records it)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.engine: Engine | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.engine = engine_in_use(self.trainer.accelerator, self.trainer.model_wrapped)
        if state.is_world_process_zero:
            logger.info("engine: %s", self.engine)
        return control
