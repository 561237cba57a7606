"""Preemption on the command line, with real signals, on one process and on two CPU ranks (torchrun, gloo):
kill -9 mid-run then the same command again resumes and ends with the normalizer state of an uninterrupted
run; SIGTERM saves a checkpoint at the next step and stops (exit 0 for the training processes); a requeued
job (the same command, ``auto_resume``) continues from it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bnpo_trl.models import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny:hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64"
STEPS = 8
RECIPE = f"""
model_name_or_path: "{TINY}"
dataset_name: arithmetic
dataset_limit: 64
system_prompt: null
reward_funcs: ["tests.paced_rewards:paced_parity"]
advantage_normalizer: ebpo
use_cpu: true
bf16: false
seed: 0
max_steps: {STEPS}
per_device_train_batch_size: 8
num_generations: 4
max_completion_length: 4
learning_rate: 0.001
lr_scheduler_type: constant
save_strategy: steps
save_steps: 1
logging_steps: 1
report_to: none
disable_tqdm: true
gradient_checkpointing: false
auto_resume: true
"""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    resolve_model_path(TINY)  # build the cached tiny model once, before two ranks race for it
    path = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def command(recipe: Path, output_dir: Path, ranks: int) -> list[str]:
    train = ["-m", "bnpo_trl.train", "--config", str(recipe), "--output_dir", str(output_dir)]
    if ranks == 1:
        return [sys.executable, *train]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    return [*launcher, "--no-python", sys.executable, *train]


def environment(ranks: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120",
    }


def run_to_end(recipe: Path, output_dir: Path, ranks: int) -> subprocess.CompletedProcess:
    cmd = command(recipe, output_dir, ranks)
    proc = subprocess.run(cmd, cwd=ROOT, env=environment(ranks), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def start(recipe: Path, output_dir: Path, ranks: int, log: Path) -> subprocess.Popen:
    cmd = command(recipe, output_dir, ranks)
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=environment(ranks),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def signal_every_process(proc: subprocess.Popen, signum: int) -> None:
    """Like slurm, which signals every process of a job step: the launcher and each worker (torchrun starts
    its workers in sessions of their own, so a process-group kill would miss them)."""
    processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)


def wait_for_checkpoint(output_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (output_dir / f"checkpoint-{step}" / "trainer_state.json").exists():
        assert proc.poll() is None, f"the run ended before checkpoint-{step}"
        assert time.monotonic() < deadline, f"no checkpoint-{step} after {timeout} s"
        time.sleep(0.05)


def final_state(output_dir: Path) -> dict:
    return json.loads((output_dir / "normalizer_state.json").read_text())["state"]


@pytest.fixture(scope="module", params=[1, 2], ids=["one_process", "two_ranks"])
def uninterrupted(request, recipe, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp(f"straight{request.param}")
    run_to_end(recipe, output_dir, request.param)
    return request.param, final_state(output_dir)


def test_kill_9_then_the_same_command_resumes_to_the_uninterrupted_state(uninterrupted, recipe, tmp_path):
    ranks, expected = uninterrupted
    output_dir = tmp_path / "run"
    proc = start(recipe, output_dir, ranks, tmp_path / "killed.log")
    wait_for_checkpoint(output_dir, 3, proc)
    signal_every_process(proc, signal.SIGKILL)  # mid-step or mid-save
    proc.wait(timeout=60)
    time.sleep(1)  # let the killed workers' exits settle
    assert not (output_dir / "run_summary.json").exists(), "the run ended before the kill: slow it down"
    second = run_to_end(recipe, output_dir, ranks)
    assert "auto_resume: resuming from" in second.stderr
    summary = json.loads((output_dir / "run_summary.json").read_text())
    assert summary["steps"] == STEPS
    assert final_state(output_dir) == expected
    assert expected["rewards"]["count"] == STEPS * 8 * ranks


def test_sigterm_saves_stops_cleanly_and_the_requeued_job_finishes(uninterrupted, recipe, tmp_path):
    ranks, expected = uninterrupted
    output_dir = tmp_path / "run"
    log = tmp_path / "terminated.log"
    proc = start(recipe, output_dir, ranks, log)
    wait_for_checkpoint(output_dir, 2, proc)
    signal_every_process(proc, signal.SIGTERM)
    returncode = proc.wait(timeout=300)
    text = log.read_text()
    stopped = [
        int(line.rsplit("step ", 1)[1].split()[0])
        for line in text.splitlines()
        if "Stopped on SIGTERM" in line
    ]
    assert len(stopped) == ranks, text[-4000:]  # every training process stopped at a step boundary ...
    assert len(set(stopped)) == 1 and 2 <= stopped[0] < STEPS  # ... the same one
    assert (output_dir / f"checkpoint-{stopped[0]}" / "normalizer_state.json").exists()
    assert not (output_dir / "run_summary.json").exists()
    if ranks == 1:
        assert returncode == 0, text[-4000:]
    else:  # torchrun re-raises the signal itself, after its workers saved and exited 0 (none was killed)
        assert "exitcode: -9" not in text and "exitcode: 1 " not in text, text[-4000:]
    run_to_end(recipe, output_dir, ranks)  # the requeued job: same command
    assert final_state(output_dir) == expected
