"""``NormalizedGRPOConfig``: TRL's ``GRPOConfig`` plus the advantage-normalizer fields."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from bnpo_trl.distributed import check_launch
from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.normalizers.specs import parse_normalizer_specs
from bnpo_trl.settings import json_setting

logger = logging.getLogger(__name__)


@dataclass
class NormalizedGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`NormalizedGRPOTrainer`]: every [`trl.GRPOConfig`] field plus the ones below.

    Note: TRL's own `loss_type="bnpo"` is unrelated to Beta normalization: it divides the token-level loss by
    the number of active tokens in the local batch. The advantage computation is chosen by
    `advantage_normalizer`; TRL's `scale_rewards` and `multi_objective_aggregation` are then ignored.
    """

    advantage_normalizer: dict | str | None = field(
        default="bnpo",
        metadata={
            "help": "How rewards become advantages: a registered normalizer (bnpo, ebpo, group, batch, none, "
            "rloo, median, reinforce_pp, opo, gdpo, passk, or an alias), 'package.module:ClassName', or a "
            "composition {center: ..., scale: ..., post: [...]} (a mapping in YAML, a JSON object on the command "
            "line). Unrelated to TRL's `loss_type='bnpo'`, which is token-level loss aggregation."
        },
    )
    normalizer_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of the normalizer, as a mapping (YAML) or a JSON string (command line), "
            "e.g. '{\"reward_range\": [0, 1]}' for bnpo or '{\"window\": 16}' for median."
        },
    )
    data_source_column: str = field(
        default="data_source",
        metadata={
            "help": "Dataset column naming each row's source dataset; used by the 'median' normalizer and for "
            "the per-source reward metrics (`rewards_by_source/<name>/mean`)."
        },
    )

    shadow_normalizers: list | str | None = field(
        default=None,
        metadata={
            "help": "Normalizers computed on the same rewards every step without affecting training (each with "
            "its own running state, saved in checkpoints); logged as shadow/<name>/pearson, sign_agreement, "
            "signal_fraction, advantage_abs_mean. A list (YAML), or comma-separated names / a JSON list."
        },
    )
    save_rewards: bool = field(
        default=False,
        metadata={
            "help": "Write each generation's gathered rewards, group size, data sources and lengths to "
            "output_dir/rewards.jsonl (rank 0, flushed per step) for `bnpo-trl replay`."
        },
    )
    filter_zero_signal: bool = field(
        default=False,
        metadata={
            "help": "Mask groups whose advantages are all 0 out of the loss, so that the loss normalization counts "
            "only completions that carry a signal (needs a token-level loss_type: dapo, bnpo, cispo, vespo)."
        },
    )

    auto_resume: bool = field(
        default=False,
        metadata={
            "help": "Resume from the newest complete checkpoint in output_dir when there is one (a requeued job "
            "continues where it stopped); refuse to start over a non-empty output_dir without one."
        },
    )
    allow_fresh_normalizer_state: bool = field(
        default=False,
        metadata={
            "help": "Allow resuming a stateful normalizer (ebpo, median, bnpo with ema or undeclared reward "
            "ranges) from a checkpoint without normalizer_state.json; its running state then starts fresh."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.normalizer_kwargs = json_setting(self.normalizer_kwargs, "normalizer_kwargs", dict, {})
        self.advantage_normalizer = _normalizer_spec(self.advantage_normalizer, "advantage_normalizer")
        self.shadow_normalizers = _shadow_specs(self.shadow_normalizers)
        check_launch(self)  # several processes that each train alone; ddp_timeout on CPU
        if (
            self.multi_objective_aggregation == "normalize_then_sum"
            and self.advantage_normalizer == "bnpo"
            and not self.normalizer_kwargs
        ):
            logger.info(
                "multi_objective_aggregation='normalize_then_sum' maps onto advantage_normalizer='gdpo' (the same "
                "numbers as TRL's option); set multi_objective_aggregation='sum_then_normalize' to keep bnpo."
            )
            self.advantage_normalizer = "gdpo"
        # unknown names or options -> ValueError, before loading
        normalizer = get_normalizer(self.advantage_normalizer, **self.normalizer_kwargs)
        for spec in self.shadow_normalizers:
            get_normalizer(spec)
        filters = self.filter_zero_signal or getattr(normalizer, "filters_zero_signal", False)
        if filters and self.loss_type not in TOKEN_LEVEL_LOSSES:
            raise ValueError(
                f"Filtering zero-signal groups needs a loss normalized by token count (loss_type one of "
                f"{', '.join(TOKEN_LEVEL_LOSSES)}): loss_type={self.loss_type!r} averages over completions, so the "
                "filtered ones would still count. Set loss_type: dapo, or turn the filter off."
            )
        if self.loss_type == "bnpo" and self.advantage_normalizer not in ("bnpo", "beta"):
            logger.info(
                "loss_type='bnpo' is TRL's token-level loss aggregation, not Beta normalization; advantages "
                "come from advantage_normalizer=%r.",
                self.advantage_normalizer,
            )


#: TRL 1.16 loss types whose normalization is the number of loss tokens (masked completions do not count).
TOKEN_LEVEL_LOSSES = ("dapo", "bnpo", "cispo", "vespo")


def _normalizer_spec(value: Any, field_name: str) -> str | dict:
    """A normalizer name, or a mapping (a JSON object on the command line); ``None`` is the default, bnpo.
    (The field is typed ``dict | str | None`` because that is the union ``HfArgumentParser`` reads as text.)"""
    if value is None:
        return "bnpo"
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return json_setting(value, field_name, dict, {})
    if not isinstance(value, str | dict):
        raise ValueError(f"{field_name} must be a name or a mapping, got {value!r}.")
    return value


def _shadow_specs(value: Any) -> list:
    """``[spec, ...]`` from a YAML list, a JSON list, or comma-separated specs (an item may be a JSON mapping)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = (
            json_setting(value, "shadow_normalizers", list, [])
            if value.lstrip().startswith("[")
            else parse_normalizer_specs(value)
        )
    if not isinstance(value, list):
        raise ValueError(f"shadow_normalizers must be a list of normalizers, got {value!r}.")
    return [_normalizer_spec(spec, "shadow_normalizers entry") for spec in value]
