"""Two CPU ranks (torchrun, gloo): identical normalizer state on both, advantages equal to a
single-process computation on the same gathered rewards, and a clean exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.tiny_model import tiny_model_path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["ebpo", "median", "bnpo"]


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
    cmd += [str(ROOT / "tests" / "distributed_run.py"), str(out), ",".join(NAMES)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "terminate called" not in proc.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


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
