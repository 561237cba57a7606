"""The reward log (bnpo_trl.reward_log) and ``bnpo-trl replay`` (bnpo_trl.replay), offline and fast."""

from __future__ import annotations

import json
import logging
import math
from typing import ClassVar

import numpy as np
import pytest
import torch

from bnpo_trl.replay import parse_normalizer_specs, replay, spec_label
from bnpo_trl.reward_log import REWARD_LOG_FILE, RewardLog, read_reward_log

NAN = float("nan")
WEIGHTS = [1.0, 0.5]
GROUP = 4


def _rewards(step: int) -> torch.Tensor:
    """(8, 2): two groups of 4; binary accuracy and format columns with unscored entries and a fully
    unscored row; step-dependent so the steps differ."""
    g = torch.Generator().manual_seed(step)
    rewards = (torch.rand(8, 2, generator=g) > 0.5).float()
    rewards[1, 0] = NAN
    rewards[6] = NAN
    rewards[0, 1] = 0.3 + step / 10  # a non-binary float32 value, kept exactly
    return rewards


def _append(log: RewardLog, step: int, rewards: torch.Tensor | None = None) -> None:
    log.append(
        step=step,
        group_size=GROUP,
        rewards=_rewards(step) if rewards is None else rewards,
        reward_names=["accuracy", "boxed_format"],
        reward_weights=WEIGHTS,
        reward_ranges=[[0.0, 1.0], [0.0, 1.0]],
        data_sources=["gsm8k"] * 4 + ["math"] * 4,
        lengths=[10 * step + i for i in range(8)],
    )


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "run" / REWARD_LOG_FILE
    with RewardLog(path) as log:
        for step in (1, 2, 3):
            _append(log, step)
    return path


def test_written_log_reads_back_equal(log_file):
    records = read_reward_log(log_file)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        expected = _rewards(record["step"])
        got = record["rewards"]
        assert got.dtype == torch.float32 and got.shape == (8, 2)
        assert torch.equal(torch.isnan(got), torch.isnan(expected))
        assert torch.equal(got.nan_to_num(-7.0), expected.nan_to_num(-7.0))  # float32 values exact
        assert record["group_size"] == GROUP and record["reward_weights"] == WEIGHTS
        assert record["reward_names"] == ["accuracy", "boxed_format"]
        assert record["reward_ranges"] == [[0.0, 1.0], [0.0, 1.0]]
        assert record["data_sources"] == ["gsm8k"] * 4 + ["math"] * 4
        assert record["lengths"] == [10 * record["step"] + i for i in range(8)]
    line = json.loads(log_file.read_text().splitlines()[0])
    assert line["version"] == 1 and line["rewards"][6] == [None, None]


def test_append_validates_shapes(tmp_path):
    with RewardLog(tmp_path / "r.jsonl") as log:
        with pytest.raises(ValueError, match="groups of group_size=3"):
            log.append(step=1, group_size=3, rewards=torch.zeros(8), reward_names=["a"], reward_weights=[1.0],
                       reward_ranges=None, data_sources=None, lengths=None)  # fmt: skip
        with pytest.raises(ValueError, match="data_sources has 2 entries for 4"):
            log.append(step=1, group_size=2, rewards=torch.zeros(4), reward_names=["a"], reward_weights=[1.0],
                       reward_ranges=None, data_sources=["x", "y"], lengths=None)  # fmt: skip
        with pytest.raises(ValueError, match="lengths has 3 entries for 4"):
            log.append(step=1, group_size=2, rewards=torch.zeros(4), reward_names=["a"], reward_weights=[1.0],
                       reward_ranges=None, data_sources=None, lengths=[1, 2, 3])  # fmt: skip
        with pytest.raises(ValueError, match="2 columns but 1 reward_names"):
            log.append(step=1, group_size=2, rewards=torch.zeros(4, 2), reward_names=["a"], reward_weights=[1.0],
                       reward_ranges=None, data_sources=None, lengths=None)  # fmt: skip
        log.append(step=1, group_size=2, rewards=torch.tensor([1.0, math.inf, 0.0, 1.0]), reward_names=["a"],
                   reward_weights=[1.0], reward_ranges=None, data_sources=None, lengths=None)  # fmt: skip
    (record,) = read_reward_log(tmp_path / "r.jsonl")  # (N,) is (N, 1); inf is unscored
    assert record["rewards"].shape == (4, 1) and math.isnan(record["rewards"][1, 0])


def test_cut_off_last_line_is_skipped_and_a_bad_middle_line_raises(log_file, caplog):
    text = log_file.read_text()
    log_file.write_text(text + text.splitlines()[0][:40])  # a crash in the middle of step 4's line
    with caplog.at_level(logging.WARNING, logger="bnpo_trl.reward_log"):
        assert [r["step"] for r in read_reward_log(log_file)] == [1, 2, 3]
    assert "line 4" in caplog.text and "cut off" in caplog.text
    lines = text.splitlines()
    log_file.write_text("\n".join([lines[0], lines[1][:-3], lines[2]]) + "\n")
    with pytest.raises(ValueError, match="line 2"):
        read_reward_log(log_file)
    log_file.write_text(lines[0].replace('"version":1', '"version":99') + "\n")
    with pytest.raises(ValueError, match="unknown reward log version 99"):
        read_reward_log(log_file)


def test_reopening_after_a_crash_removes_the_cut_off_line(log_file):
    log_file.write_text(log_file.read_text() + '{"version":1,"step":4,"gro')
    with RewardLog(log_file) as log:  # the resumed run
        _append(log, 4)
    assert [r["step"] for r in read_reward_log(log_file)] == [1, 2, 3, 4]


def test_resumed_run_replaces_the_steps_it_repeats(log_file):
    with RewardLog(log_file) as log:  # resumed from checkpoint-1: steps 2, 3 again, then 4
        for step in (2, 3, 4):
            _append(log, step, rewards=_rewards(step + 100))
    records = read_reward_log(log_file)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert torch.equal(records[0]["rewards"].nan_to_num(-7), _rewards(1).nan_to_num(-7))
    for record in records[1:]:  # the later run's
        assert torch.equal(record["rewards"].nan_to_num(-7), _rewards(record["step"] + 100).nan_to_num(-7))


def _group_advantages_by_hand(rewards: torch.Tensor, weights: list[float]) -> list[float]:
    """A plain loop: combined = weighted sum of the scored columns (unscored row: NaN);
    A = (r - mean_g) / (std_g(n-1) + 1e-4) over the group's scored rows; NaN or < 2 scored -> 0."""
    combined = []
    for row in rewards.tolist():
        scored = [w * x for w, x in zip(weights, row, strict=True) if not math.isnan(x)]
        combined.append(sum(scored) if scored else NAN)
    out = []
    for start in range(0, len(combined), GROUP):
        group = combined[start : start + GROUP]
        values = [x for x in group if not math.isnan(x)]
        for x in group:
            if math.isnan(x) or len(values) < 2:
                out.append(0.0)
                continue
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            out.append((x - mean) / (std + 1e-4))
    return out


def test_replay_of_group_matches_a_hand_computation(log_file):
    records = read_reward_log(log_file)
    result = replay(records, ["group", "bnpo", "group"])
    assert result.labels == ["group", "bnpo", "group #2"] and result.steps == [1, 2, 3]
    for record, entry, bnpo_entry, k in zip(
        records, result.per_step["group"], result.per_step["bnpo"], range(3), strict=True
    ):
        by_hand = _group_advantages_by_hand(record["rewards"], WEIGHTS)
        assert entry["step"] == record["step"]
        assert entry["signal_fraction"] == pytest.approx(sum(a != 0 for a in by_hand) / len(by_hand))
        assert entry["mean_abs_advantage"] == pytest.approx(
            sum(abs(a) for a in by_hand) / len(by_hand), rel=1e-5
        )
        assert entry["pearson_vs_first"] == pytest.approx(1.0) and entry["sign_agreement_vs_first"] == 1.0
        group_adv = result.advantages["group"][8 * k : 8 * (k + 1)]
        bnpo_adv = result.advantages["bnpo"][8 * k : 8 * (k + 1)]
        assert group_adv.tolist() == pytest.approx(by_hand, rel=1e-5, abs=1e-6)
        expected_r = np.corrcoef(bnpo_adv.double().numpy(), group_adv.double().numpy())[0, 1]
        assert bnpo_entry["pearson_vs_first"] == pytest.approx(expected_r)
        agree = sum(
            int(np.sign(a)) == int(np.sign(b))
            for a, b in zip(bnpo_adv.tolist(), group_adv.tolist(), strict=True)
        )
        assert bnpo_entry["sign_agreement_vs_first"] == pytest.approx(agree / 8)
        assert set(bnpo_entry["stats"]) >= {"bnpo/alpha", "bnpo/beta"}
    twin = result.per_step["group #2"]
    assert all(
        e["pearson_vs_first"] == pytest.approx(1.0) and e["sign_agreement_vs_first"] == 1.0 for e in twin
    )
    summary = {row["normalizer"]: row for row in result.summary()}
    assert summary["group"]["alpha"] is None and summary["bnpo"]["alpha"] >= 1.0


def test_pearson_is_none_without_variance(tmp_path):
    path = tmp_path / REWARD_LOG_FILE
    with RewardLog(path) as log:  # every group all-correct: group advantages are all 0
        log.append(step=0, group_size=2, rewards=torch.ones(4), reward_names=["a"], reward_weights=[1.0],
                   reward_ranges=[[0.0, 1.0]], data_sources=None, lengths=None)  # fmt: skip
    (entry,) = replay(read_reward_log(path), ["group", "none"]).per_step["none"]
    assert entry["pearson_vs_first"] is None and entry["signal_fraction"] == 0.0


def test_cli_writes_table_json_and_plot(log_file, tmp_path, capsys):
    from bnpo_trl.cli import main

    out = tmp_path / "replay_out"
    main(["replay", str(log_file), "--normalizers", "group,bnpo,ebpo", "--output_dir", str(out)])
    printed = capsys.readouterr().out
    table = (out / "replay.md").read_text()
    for name in ("group", "bnpo", "ebpo"):
        assert f"| {name} | 3 |" in table and f"| {name} | 3 |" in printed
    bnpo_row = next(line for line in table.splitlines() if line.startswith("| bnpo |"))
    group_row = next(line for line in table.splitlines() if line.startswith("| group |"))
    assert " / " in bnpo_row.split("|")[-2] and group_row.split("|")[-2].strip() == "-"
    payload = json.loads((out / "replay.json").read_text())
    assert payload["normalizers"] == ["group", "bnpo", "ebpo"] and payload["steps"] == [1, 2, 3]
    assert (
        len(payload["per_step"]["ebpo"]) == 3
        and "ebpo/global_mean" in payload["per_step"]["ebpo"][0]["stats"]
    )
    png = (out / "replay.png").read_bytes()
    assert len(png) > 1000 and png.startswith(b"\x89PNG")


def test_cli_default_output_dir_is_next_to_the_log(log_file, capsys):
    from bnpo_trl.replay import main

    main([str(log_file), "--normalizers", "group"])
    assert (log_file.parent / "replay" / "replay.md").is_file()


def test_specs_parse_json_mappings_with_commas():
    specs = parse_normalizer_specs('group,{"name": "bnpo", "ema": 0.5}')
    assert specs == ["group", {"name": "bnpo", "ema": 0.5}]
    assert [spec_label(s) for s in specs] == ["group", "bnpo(ema=0.5)"]
    composed = parse_normalizer_specs(
        '{"center": "ebpo", "scale": "bnpo", "post": ["standardize", "clip"]}, rloo'
    )
    assert spec_label(composed[0]) == "center=ebpo,scale=bnpo,post=standardize+clip" and composed[1] == "rloo"
    assert parse_normalizer_specs('{"name": "x", "note": "a,b}"},group')[0]["note"] == "a,b}"
    for bad in ("group,,bnpo", '{"name": "bnpo"', "[1, 2]x,", "{1: 2}"):
        with pytest.raises(ValueError):
            parse_normalizer_specs(bad)


def test_replay_passes_user_reward_range_through(log_file):
    records = read_reward_log(log_file)
    records = [{**r, "rewards": r["rewards"] * 2} for r in records]  # values in [0, 2]
    with pytest.raises(ValueError, match="BNPO needs rewards in"):
        replay(records, ["bnpo"])  # the log's ranges say [0, 1]
    result = replay(records, [{"name": "bnpo", "reward_range": [0, 2]}])
    assert result.labels == ["bnpo(reward_range=[0,2])"]


class LengthProbe:
    """A normalizer (the bare interface) that takes lengths: advantage = its completion's length."""

    uses_lengths = True
    seen: ClassVar[list] = []

    def __init__(self) -> None:
        self.last_stats: dict[str, float] = {}

    def __call__(
        self, rewards, group_size, data_sources=None, reward_weights=None, update=True, *, lengths=None
    ):
        LengthProbe.seen.append(lengths)
        return (
            torch.zeros(rewards.shape[0])
            if lengths is None
            else torch.as_tensor(lengths, dtype=torch.float32)
        )

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_lengths_go_only_to_normalizers_that_use_them(log_file):
    LengthProbe.seen.clear()
    records = read_reward_log(log_file)
    result = replay(records, ["group", "tests.test_replay:LengthProbe"])  # group is not given lengths
    assert [t.tolist() for t in LengthProbe.seen] == [
        [10.0 * r["step"] + i for i in range(8)] for r in records
    ]
    assert result.per_step["tests.test_replay:LengthProbe"][0]["mean_abs_advantage"] == pytest.approx(13.5)
    LengthProbe.seen.clear()
    replay([{**records[0], "lengths": None}], ["tests.test_replay:LengthProbe"])
    assert LengthProbe.seen == [None]  # no lengths in the log: the normalizer's own fallback


def test_a_composed_spec_replays_with_the_log_ranges_like_its_preset(log_file):
    records = read_reward_log(log_file)
    composed = {"center": "group_mean", "scale": "bnpo"}  # the bnpo preset, given the log's reward ranges
    result = replay(records, ["bnpo", composed, {"center": "ebpo", "scale": "group_std"}])
    assert result.labels == ["bnpo", "center=group_mean,scale=bnpo", "center=ebpo,scale=group_std"]
    assert torch.equal(result.advantages["bnpo"], result.advantages["center=group_mean,scale=bnpo"])
    assert all(e["sign_agreement_vs_first"] == 1.0 for e in result.per_step["center=group_mean,scale=bnpo"])
