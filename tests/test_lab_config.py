"""The config fields of the normalizer lab: compositions, shadows, reward log, zero-signal filter."""

from __future__ import annotations

import pytest
from trl import TrlParser

from bnpo_trl.config import NormalizedGRPOConfig
from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.shadows import ShadowNormalizers
from tests.trainer_utils import tiny_config


def parse(tmp_path, *flags: str) -> NormalizedGRPOConfig:
    argv = ["--output_dir", str(tmp_path), "--bf16", "false", "--use_cpu", "true"]
    (config,) = TrlParser((NormalizedGRPOConfig,)).parse_args_into_dataclasses([*argv, *flags])
    return config


def test_a_composition_and_shadows_from_the_command_line(tmp_path):
    config = parse(
        tmp_path,
        "--advantage_normalizer",
        '{"center": "ebpo", "scale": "bnpo"}',
        "--shadow_normalizers",
        "group, ebpo",
    )
    assert config.advantage_normalizer == {"center": "ebpo", "scale": "bnpo"}
    assert config.shadow_normalizers == ["group", "ebpo"]
    as_json = parse(tmp_path, "--shadow_normalizers", '["rloo", {"name": "bnpo", "ema": 0.5}]')
    assert as_json.shadow_normalizers == ["rloo", {"name": "bnpo", "ema": 0.5}]
    assert parse(tmp_path).advantage_normalizer == "bnpo" and parse(tmp_path).shadow_normalizers == []


def test_shadows_from_a_yaml_list_are_checked_when_the_config_is_built(tmp_path):
    config = tiny_config(tmp_path, shadow_normalizers=["group", {"center": "loo", "scale": "none"}])
    assert config.shadow_normalizers[1] == {"center": "loo", "scale": "none"}
    with pytest.raises(ValueError, match="Unknown normalizer 'grop'"):
        tiny_config(tmp_path, shadow_normalizers=["grop"])
    with pytest.raises(ValueError, match="Valid scales"):
        tiny_config(tmp_path, shadow_normalizers=[{"center": "loo", "scale": "std"}])
    with pytest.raises(ValueError, match="must be a list"):
        tiny_config(tmp_path, shadow_normalizers={"center": "loo"})


def test_a_shadow_listed_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        ShadowNormalizers(["group", {"name": "group"}], get_normalizer)


@pytest.mark.parametrize(
    "overrides",
    [
        {"filter_zero_signal": True},
        {"advantage_normalizer": {"center": "group_mean", "scale": "none", "post": ["filter_zero_signal"]}},
    ],
)
def test_the_zero_signal_filter_needs_a_token_level_loss(tmp_path, overrides):
    assert tiny_config(tmp_path, loss_type="dapo", **overrides)
    with pytest.raises(ValueError, match="loss_type: dapo"):
        tiny_config(tmp_path, loss_type="grpo", **overrides)


def test_a_bad_composition_fails_before_the_model_loads(tmp_path):
    with pytest.raises(ValueError, match="Valid centers"):
        tiny_config(tmp_path, advantage_normalizer={"center": "median"})
    with pytest.raises(ValueError, match="must be a dict or its JSON form"):
        parse(tmp_path, "--advantage_normalizer", "{not json")
