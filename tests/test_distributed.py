"""Two CPU ranks (torchrun, gloo): identical normalizer state on both, advantages equal to a
single-process computation on the same gathered rewards, and a clean exit; the ``lab`` run adds shadow
normalizers, a per-source normalizer, the reward log (rank 0 alone) and a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnpo_trl.checkpoints import NORMALIZER_STATE_FILE
from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.reward_log import REWARD_LOG_FILE, read_reward_log
from bnpo_trl.tiny_model import tiny_model_path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["ebpo", "median", "bnpo"]
LAB = (
    "lab"  # tests/distributed_run.py RUNS["lab"]: per-source ebpo, three shadows, save_rewards, a checkpoint
)


@pytest.fixture(scope="module")
def two_rank_reports(tmp_path_factory):
    tiny_model_path()  # build the cached model once, before two processes race for it
    out = tmp_path_factory.mktemp("two_ranks")
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests" / "distributed_run.py"), str(out), ",".join([*NAMES, LAB])]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "terminate called" not in proc.stderr
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        report["out_dir"] = str(out)
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_two_ranks_share_state_and_match_single_process(two_rank_reports, name):
    assert all(report["ddp_wrappers_left"] == 0 for report in two_rank_reports)
    rank0, rank1 = (report[name] for report in two_rank_reports)
    assert rank0["world_size"] == rank1["world_size"] == 2, "the launcher started only one process"
    assert rank0["backend"] == "gloo"
    assert {rank0["process_index"], rank1["process_index"]} == {0, 1}
    assert rank0["state"] == rank1["state"]

    # the trainer hands bnpo the reward's range; parity_reward declares none (running min-max, from [0, 1])
    single = get_normalizer(name, **({"reward_range": [None]} if name == "bnpo" else {}))
    for step0, step1 in zip(rank0["steps"], rank1["steps"], strict=True):
        assert step0["rewards"] == step1["rewards"]  # both ranks see the same gathered rewards
        rewards = torch.tensor(step0["rewards"])
        assert rewards.shape[0] == 8  # 2 ranks x 4 local completions (one group of 4 each)
        expected = single(rewards, group_size=4, data_sources=step0["data_sources"])
        local = torch.tensor(step0["advantages"] + step1["advantages"])
        torch.testing.assert_close(local, expected, rtol=0, atol=1e-6)
    assert rank0["state"] == single.state_dict()


@pytest.mark.slow
def test_two_ranks_share_shadow_and_per_source_states_and_rank_0_logs_the_gathered_rewards(two_rank_reports):
    rank0, rank1 = (report[LAB] for report in two_rank_reports)
    assert rank0["world_size"] == 2 and {rank0["process_index"], rank1["process_index"]} == {0, 1}
    if rank0["process_index"] == 1:
        rank0, rank1 = rank1, rank0
    assert rank0["state"] == rank1["state"]
    assert rank0["shadow_states"] == rank1["shadow_states"]
    assert set(rank0["shadow_states"]) == {"ebpo", "group", "bnpo(per_source=true)"}

    # one process, the same gathered rewards: the training normalizer and every shadow, fed in order
    single = get_normalizer("ebpo", per_source=True)
    shadows = {
        "ebpo": get_normalizer("ebpo"),
        "group": get_normalizer("group"),
        "bnpo(per_source=true)": get_normalizer("bnpo", per_source=True, reward_range=[None]),
    }
    assert len(rank0["steps"]) == len(rank1["steps"]) == 2
    for step0, step1 in zip(rank0["steps"], rank1["steps"], strict=True):
        assert step0["rewards"] == step1["rewards"] and step0["data_sources"] == step1["data_sources"]
        rewards = torch.tensor(step0["rewards"])
        assert rewards.shape[0] == 8
        expected = single(rewards, group_size=4, data_sources=step0["data_sources"])
        local = torch.tensor(step0["advantages"] + step1["advantages"])
        torch.testing.assert_close(local, expected, rtol=0, atol=1e-6)
        for norm in shadows.values():
            norm(rewards, group_size=4, data_sources=step0["data_sources"])
    assert rank0["state"] == single.state_dict()
    assert set(rank0["state"]["by_source"]) == {s for step in rank0["steps"] for s in step["data_sources"]}
    assert rank0["shadow_states"] == {label: norm.state_dict() for label, norm in shadows.items()}

    # rank 0 alone wrote the reward log: one line per generation, each with both ranks' rows in rank order
    run_dir = Path(two_rank_reports[0]["out_dir"]) / LAB
    lines = [line for line in (run_dir / REWARD_LOG_FILE).read_text().splitlines() if line.strip()]
    assert len(lines) == len(rank0["steps"])
    records = read_reward_log(run_dir / REWARD_LOG_FILE)
    assert [r["step"] for r in records] == [0, 1]
    for record, step0, step1 in zip(records, rank0["steps"], rank1["steps"], strict=True):
        assert record["rewards"].shape == (2 * 4, 1)
        assert record["rewards"].tolist() == step0["rewards"]
        assert record["data_sources"] == step0["data_sources"]
        assert record["lengths"] == step0["lengths"] + step1["lengths"]

    # the checkpoint holds the states both ranks agreed on
    saved = json.loads((run_dir / "checkpoint-2" / NORMALIZER_STATE_FILE).read_text())
    assert saved["identical_on_ranks"] == 2
    assert saved["state"] == rank0["state"] and saved["shadow_states"] == rank0["shadow_states"]
