"""The real engines on two CPU ranks (gloo): the train CLI under ``accelerate launch`` with the CPU twins of
the shipped accelerate configs (``configs/accelerate/cpu/``) — DDP, DeepSpeed ZeRO-2, ZeRO-3 and FSDP2
(through the test-only shim ``tests/fsdp_on_cpu.py``), launched through ``tests/engine_probe.py``, which
records each rank's generation contexts — and a simulated 2-node ZeRO-3 job run from the slurm script's own
``--dry-run`` commands.

Each engine's run is compared with the DDP run of the same recipe and seed: the engine read from the
prepared model, rewards, losses, the EBPO state (checked identical on both ranks at every save), the
benchmark evaluation during training (sharded over the ranks), the final weights, and a resume from the
step-2 checkpoint. DeepSpeed comes from the ``deepspeed`` extra (CI installs it; without it, and outside
CI, the DeepSpeed cases skip).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from bnpo_trl.models import load_tokenizer, resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "bnpo_trl" / "configs" / "accelerate"
PROBE = ROOT / "tests" / "engine_probe.py"
TINY = "tiny:hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"
RECIPE = """
model_name_or_path: MODEL
dataset_name: arithmetic
dataset_limit: 64
system_prompt: null
reward_funcs: ["tests.paced_rewards:paced_parity"]
advantage_normalizer: ebpo
use_cpu: true
bf16: false
seed: 0
max_steps: 4
per_device_train_batch_size: 8
num_generations: 4
max_completion_length: 4
learning_rate: 0.001
lr_scheduler_type: constant
save_strategy: steps
save_steps: 2
logging_steps: 1
report_to: none
disable_tqdm: true
gradient_checkpointing: false
sft_warmup: false
benchmark_eval: {benchmarks: [arithmetic], every: 2, n: 1, temperature: 0.0, limit: 7, max_new_tokens: 6, samples: true}
"""
#: engine -> (what the run must report, whether this rank holds only part of the parameters)
ENGINES = {
    "ddp": ("DDP", False),
    "zero2": ("DeepSpeed ZeRO-2", False),  # ZeRO-2 shards optimizer states and gradients, not parameters
    "zero3": ("DeepSpeed ZeRO-3", True),
    "fsdp2": ("FSDP2", True),
}
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(
    not HAS_DEEPSPEED and not os.environ.get("CI"),
    reason="pip install 'bnpo-trl[deepspeed]' (CI installs it, and there this test fails without it)",
)
pytestmark = pytest.mark.slow


def _marks(engine: str) -> list:
    return [needs_deepspeed] if engine.startswith("zero") else []


ENGINE_PARAMS = [pytest.param(e, marks=_marks(e)) for e in ENGINES]


def _environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `accelerate` of this venv
    }


@cache
def _workdir() -> Path:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bnpo-engines-"))
    # The tiny random model answers every prompt with the same greedy text; its weights x8 do not, so the
    # evaluation's completions show whether each one came back under its own problem.
    tiny = resolve_model_path(TINY)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.mul_(8.0)
    model.save_pretrained(work / "model")
    load_tokenizer(tiny).save_pretrained(work / "model")
    (work / "recipe.yaml").write_text(RECIPE.replace("MODEL", str(work / "model")))
    return work


def _launch(
    engine: str, output_dir: Path, *extra: str, probe: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``accelerate launch`` of the train CLI with the engine's CPU twin; with ``probe``, through
    tests/engine_probe.py (records GRPO's generation contexts; FSDP2 gets tests/fsdp_on_cpu.py's switch)."""
    config = str(ACCEL / "cpu" / f"{engine}.yaml")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        config,
        "--main_process_port",
        "0",
    ]
    if probe:
        cmd += [str(PROBE), *(["--fsdp-on-cpu"] if engine == "fsdp2" else [])]
    else:
        cmd += ["-m", "bnpo_trl.train"]
    cmd += ["--config", str(_workdir() / "recipe.yaml"), "--output_dir", str(output_dir), *extra]
    env = {**_environment(), "BNPO_PROBE_DIR": str(output_dir / "probe"), **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=_workdir())


@cache
def _run(engine: str, resumed: bool = False) -> Path:
    """The engine's run (4 steps, checkpoints at 2 and 4), or its resume from the full run's checkpoint-2."""
    output_dir = _workdir() / (f"{engine}-resumed" if resumed else engine)
    extra = ["--resume_from_checkpoint", str(_run(engine) / "checkpoint-2")] if resumed else []
    proc = _launch(engine, output_dir, *extra)
    (output_dir / "launch.log").write_text(proc.stdout + proc.stderr) if output_dir.exists() else None
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return output_dir


def _summary(folder: Path) -> dict:
    return json.loads((folder / "run_summary.json").read_text())


def _per_step(summary: dict, key: str) -> dict[int, float]:
    return {h["step"]: h[key] for h in summary["log_history"] if key in h}


def _state(folder: Path) -> dict:
    return json.loads((folder / "normalizer_state.json").read_text())


def _completions(folder: Path, step: int) -> list[tuple[int, str, str]]:
    """(problem index, problem, completion) of the evaluation at ``step`` (``benchmark_eval.samples``)."""
    lines = (folder / "benchmark_eval" / f"step-{step}.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [(r["problem_index"], r["problem"], r["completion"]) for r in rows]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder)  # the final model loads with from_pretrained
    return {name: p.detach().clone() for name, p in model.state_dict().items()}


def _tied_values(folder: Path) -> int:
    """Values that ``state_dict`` lists twice (the tied output embedding) but ``parameters()`` once."""
    model = AutoModelForCausalLM.from_pretrained(folder)
    return sum(t.numel() for t in model.state_dict().values()) - sum(p.numel() for p in model.parameters())


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_each_engine_really_runs_and_trains_as_ddp_does(engine: str) -> None:
    folder, ddp = _run(engine), _run("ddp")
    name, sharded = ENGINES[engine]
    summary = _summary(folder)
    assert summary["engine"] == f"{name}, 2 processes, gloo"
    assert f"engine: {name}, 2 processes, gloo" in (folder / "launch.log").read_text()
    detail = summary["engine_detail"]
    assert detail["sharded"] is sharded and detail["processes"] == 2 and summary["world_size"] == 2
    if sharded:
        assert detail["local_fraction"] == pytest.approx(0.5, abs=0.05)  # half the values on each rank
    # every rollout went through TRL's own unwrap_model_for_generation, on both ranks, with the full
    # parameter values inside it
    full_size = sum(t.numel() for t in _weights(ddp).values()) - _tied_values(ddp)
    for rank in (0, 1):
        calls = json.loads((folder / "probe" / f"rank{rank}.json").read_text())
        assert len(calls) == 4 and all(c["inside"] == full_size for c in calls)
        if engine == "zero3":  # partitions only, before the first forward; afterwards DeepSpeed keeps a
            assert calls[0]["outside"] == 0  # model this small materialized (stage3_max_reuse_distance)
    reference = _summary(ddp)
    assert _per_step(summary, "reward") == _per_step(reference, "reward")
    assert _per_step(summary, "loss") == pytest.approx(_per_step(reference, "loss"), rel=1e-4, abs=1e-9)
    for checkpoint in ("checkpoint-2", "checkpoint-4", "."):
        state = _state(folder / checkpoint)
        assert state["identical_on_ranks"] == 2
        assert state["state"] == _state(ddp / checkpoint)["state"]
    assert _state(folder)["state"]["rewards"]["count"] == 4 * 16  # 4 steps x 16 completions, both ranks'
    # evaluation during training: greedy, so the sharded generations must give exactly the DDP figures
    evals = summary["benchmark_eval"]
    assert [e["step"] for e in evals] == [2, 4] and evals == reference["benchmark_eval"]
    for step in (2, 4):  # text for text, each under its own problem
        assert _completions(folder, step) == _completions(ddp, step)
    weights, initial = _weights(folder), _weights(_workdir() / "model")
    assert _max_difference(_weights(ddp), initial) > 1e-4  # training moved the weights...
    assert _max_difference(weights, _weights(ddp)) < 1e-5  # ...and every engine the same way


@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_each_engine_resumes_exactly(engine: str) -> None:
    full, resumed = _run(engine), _run(engine, resumed=True)
    summary = _summary(resumed)
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 4
    assert _per_step(summary, "reward") == _per_step(_summary(full), "reward")  # 1-2 from the checkpoint
    assert _state(resumed)["state"] == _state(full)["state"]
    assert _max_difference(_weights(resumed), _weights(full)) < 1e-5


def test_the_evaluation_shards_agree_with_one_process(tmp_path: Path) -> None:
    """Every completion of the sharded evaluation at the last step, under its problem, equals a one-process
    evaluation of the saved model (greedy: the same texts whichever rank generates them)."""
    from bnpo_trl.evaluation import evaluate
    from bnpo_trl.models import load_model, load_tokenizer

    folder = _run("ddp")
    model, tokenizer = load_model(str(folder)), load_tokenizer(str(folder))
    samples = tmp_path / "samples.jsonl"
    evaluate(
        model,
        tokenizer,
        ["arithmetic"],
        n=1,
        temperature=0.0,
        limit=7,
        max_new_tokens=6,
        system_prompt=None,
        n_bootstrap=0,
        progress=False,
        samples_path=samples,
    )
    alone = [json.loads(line) for line in samples.read_text().splitlines()]
    sharded = _completions(folder, 4)
    assert sharded == [(r["problem_index"], r["problem"], r["completion"]) for r in alone]
    assert len(sharded) == 7 and len({c for _, _, c in sharded}) > 1  # prompts that give different texts


# -- no engine degrades silently ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "asked"),
    [("fsdp2", "FSDP"), pytest.param("zero3", "DeepSpeed", marks=needs_deepspeed)],
)
def test_an_engine_that_would_silently_become_ddp_is_an_error(
    config: str, asked: str, tmp_path: Path
) -> None:
    if config == "fsdp2":  # accelerate drops FSDP on CPU ranks: without the test shim, this would be DDP
        proc = _launch(config, tmp_path / "out", probe=False)
    else:  # accelerate drops DeepSpeed when told ACCELERATE_USE_CPU=1 (a setting the DDP twin documents)
        proc = _launch(config, tmp_path / "out", probe=False, env={"ACCELERATE_USE_CPU": "1"})
    assert proc.returncode != 0
    assert "EngineMismatchError" in proc.stderr and f"The launch asked for {asked}" in proc.stderr
    assert not (tmp_path / "out" / "checkpoint-2").exists()


# -- the CPU twins are the GPU files with CPU settings ----------------------------------------------------------
TWIN_KEYS = {"num_processes", "mixed_precision", "use_cpu"}


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3", "fsdp2", "zero3-multinode"])
def test_each_cpu_twin_differs_from_its_gpu_config_only_in_processes_precision_and_device(name: str) -> None:
    gpu = yaml.safe_load((ACCEL / f"{name}.yaml").read_text())
    cpu = yaml.safe_load((ACCEL / "cpu" / f"{name}.yaml").read_text())
    assert {k: v for k, v in gpu.items() if k not in TWIN_KEYS} == {
        k: v for k, v in cpu.items() if k not in TWIN_KEYS
    }
    assert cpu["num_processes"] == 2 and cpu["mixed_precision"] == "no" and cpu["use_cpu"] is True
    assert gpu["use_cpu"] is False and gpu["mixed_precision"] == "bf16"


# -- multi-node: the slurm script's own commands, two "nodes" on this machine -----------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_deepspeed
def test_the_slurm_dry_run_commands_train_a_two_node_job(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"  # two "nodes", both this machine
    scontrol.write_text(
        '#!/usr/bin/env bash\n[[ "$1 $2" == "show hostnames" ]] && printf "127.0.0.1\\nlocalhost\\n"\n'
    )
    scontrol.chmod(0o755)
    out = tmp_path / "out"
    env = {**_environment(), "PATH": f"{bin_dir}{os.pathsep}{_environment()['PATH']}"}
    env |= {"SLURM_JOB_NODELIST": "node-[1-2]", "SLURM_NNODES": "2", "SLURM_SUBMIT_DIR": str(ROOT)}
    dry = subprocess.run(
        ["bash", str(ROOT / "scripts" / "slurm" / "train.slurm"), "--dry-run", "--no-vllm",
         "--accelerator", "configs/accelerate/cpu/zero3-multinode.yaml", "--gpus-per-node", "1",
         "--main-port", str(_free_port()), "--model", TINY, "--recipe", str(_workdir() / "recipe.yaml"),
         "--args", f"--output_dir {out} --max_steps 2 --save_strategy no"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    nodes = re.findall(r"^\[train (\S+) machine_rank=(\d)\] (.+)$", dry.stdout, flags=re.M)
    assert [(host, rank) for host, rank, _ in nodes] == [("127.0.0.1", "0"), ("localhost", "1")]
    for _, rank, command in nodes:
        assert "--num_machines 2 --num_processes 2" in command and f"--machine_rank {rank}" in command
        assert "--main_process_ip 127.0.0.1" in command and "--auto_resume true" in command
    results: dict[str, subprocess.CompletedProcess] = {}

    def node(rank: str, command: str) -> None:  # each node runs its line verbatim, as srun's task would
        results[rank] = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT
        )

    threads = [threading.Thread(target=node, args=(rank, command)) for _, rank, command in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rank, proc in sorted(results.items()):
        assert proc.returncode == 0, f"node {rank}:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    summary = _summary(out)
    assert summary["engine"] == "DeepSpeed ZeRO-3, 2 processes, gloo" and summary["steps"] == 2
    assert summary["engine_detail"]["local_fraction"] == pytest.approx(0.5, abs=0.05)
    assert _state(out)["identical_on_ranks"] == 2
