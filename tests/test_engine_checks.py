"""Fast checks of the engine report and refusal (bnpo_trl/engine.py), the rank-agreement check of the
normalizer state, the sharded evaluation's split of the prompts, and the recipe's ``benchmark_eval``.
The real engines on two ranks: tests/test_engines.py."""

from __future__ import annotations

import types

import pytest
import torch
from accelerate.utils import DistributedType

from bnpo_trl.arguments import benchmark_eval_settings
from bnpo_trl.engine import Engine, EngineMismatchError, check_engine, engine_in_use
from bnpo_trl.evaluation.sharded import rank_share


def _accelerator(kind: DistributedType, n: int = 2, **state) -> types.SimpleNamespace:
    return types.SimpleNamespace(distributed_type=kind, num_processes=n, state=types.SimpleNamespace(**state))


@pytest.mark.parametrize(
    ("env", "args", "kind", "asked"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, {}, DistributedType.MULTI_CPU, "FSDP"),
        ({}, {"fsdp": "full_shard"}, DistributedType.MULTI_GPU, "FSDP"),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, {}, DistributedType.MULTI_CPU, "DeepSpeed"),
        ({}, {"deepspeed": "ds.json"}, DistributedType.NO, "DeepSpeed"),
    ],
)
def test_an_engine_asked_for_and_not_set_up_is_an_error(env, args, kind, asked, monkeypatch) -> None:
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(
        EngineMismatchError, match=f"The launch asked for {asked} but accelerate set the run up"
    ):
        check_engine(_accelerator(kind), types.SimpleNamespace(**{"deepspeed": None, "fsdp": None, **args}))


@pytest.mark.parametrize(
    ("env", "kind"),
    [({}, DistributedType.MULTI_CPU), ({"ACCELERATE_USE_FSDP": "true"}, DistributedType.FSDP)],
)
def test_the_engine_asked_for_passes(env, kind, monkeypatch) -> None:
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_engine(_accelerator(kind), types.SimpleNamespace(deepspeed=None, fsdp=None))


class _Partitioned(torch.nn.Parameter):
    """Stands in for a ZeRO-3 parameter: empty here, ``ds_tensor`` this rank's partition of ``ds_numel``."""


def test_the_engine_reads_the_share_of_parameters_this_rank_holds() -> None:
    model = torch.nn.Linear(4, 4)  # 20 values
    assert engine_in_use(_accelerator(DistributedType.MULTI_CPU), model) == Engine("DDP", 2, None, 1.0)
    assert str(engine_in_use(_accelerator(DistributedType.NO, 1), model)) == "single process, 1 process"
    zero3 = torch.nn.Module()
    for name, (local, full) in {"weight": (8, 16), "bias": (2, 4)}.items():
        p = _Partitioned(torch.empty(0))
        p.ds_tensor, p.ds_numel = torch.empty(local), full
        zero3.register_parameter(name, p)
    plugin = types.SimpleNamespace(zero_stage=3)
    engine = engine_in_use(_accelerator(DistributedType.DEEPSPEED, deepspeed_plugin=plugin), zero3)
    assert engine.name == "DeepSpeed ZeRO-3" and engine.local_fraction == 0.5 and engine.sharded
    assert engine.to_dict() == {
        "name": "DeepSpeed ZeRO-3",
        "processes": 2,
        "backend": None,
        "local_fraction": 0.5,
        "sharded": True,
    }


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n_prompts", [0, 1, 2, 5, 8])
def test_rank_shares_cover_every_prompt_once_with_equal_lengths(n_prompts: int, world: int) -> None:
    shares = [rank_share(n_prompts, rank, world) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # the same number of generate calls on every rank
    real = [
        i for rank, share in enumerate(shares) for t, i in enumerate(share) if rank + t * world < n_prompts
    ]
    assert sorted(real) == list(range(n_prompts))
    assert all(0 <= i < max(n_prompts, 1) for s in shares for i in s)


def test_state_that_differs_across_ranks_is_an_error(monkeypatch) -> None:
    from bnpo_trl import trainer as trainer_module

    fake = types.SimpleNamespace(accelerator=types.SimpleNamespace(num_processes=2), normalizer_name="ebpo")
    other = {"rewards": {"count": 3}}
    monkeypatch.setattr(
        trainer_module,
        "gather_object",
        lambda items: [*items, trainer_module.hashlib.sha256(b"x").hexdigest()],
    )
    check = trainer_module.NormalizedGRPOTrainer._check_state_on_every_rank
    with pytest.raises(RuntimeError, match="'ebpo' normalizer state differs across ranks"):
        check(fake, other)
    monkeypatch.setattr(trainer_module, "gather_object", lambda items: items * 2)
    assert check(fake, other) == 2


def test_benchmark_eval_is_checked_and_completed() -> None:
    settings = benchmark_eval_settings('{"benchmarks": ["math500", "amc23"], "every": 25, "n": 8}')
    assert settings["benchmarks"] == ["math500", "amc23"] and settings["every"] == 25 and settings["n"] == 8
    assert settings["limit"] == 64 and settings["max_new_tokens"] == 1024
    assert benchmark_eval_settings(None) is None
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['evry'\]"):
        benchmark_eval_settings({"benchmarks": "math500", "evry": 5})
    with pytest.raises(ValueError, match="needs `benchmarks`"):
        benchmark_eval_settings({"every": 5})
    with pytest.raises(ValueError, match="whole number of steps"):
        benchmark_eval_settings({"benchmarks": "math500", "every": 0})


def test_benchmark_eval_is_a_recipe_key(tmp_path) -> None:
    from bnpo_trl.recipe import parse_args

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_name_or_path: tiny\ndataset_name: arithmetic\nuse_cpu: true\nbf16: false\n"
        "output_dir: out\nbenchmark_eval: {benchmarks: [arithmetic, amc23], every: 10, limit: 8}\n"
    )
    script_args, _, _ = parse_args(["--config", str(recipe)])
    assert script_args.heldout.benchmark_eval["benchmarks"] == ["arithmetic", "amc23"]
    assert script_args.heldout.benchmark_eval["limit"] == 8
    with pytest.raises(ValueError, match="unknown key"):
        parse_args(["--config", str(recipe), "--benchmark_eval", '{"benchmarks": "x", "every": 1, "k": 2}'])
