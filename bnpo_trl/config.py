"""``NormalizedGRPOConfig``: TRL's ``GRPOConfig`` plus the advantage-normalizer fields."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from bnpo_trl.distributed import check_launch
from bnpo_trl.normalizers import get_normalizer

logger = logging.getLogger(__name__)


@dataclass
class NormalizedGRPOConfig(GRPOConfig):
    r"""
    Configuration for [`NormalizedGRPOTrainer`]: every [`trl.GRPOConfig`] field plus the ones below.

    Note: TRL's own `loss_type="bnpo"` is unrelated to Beta normalization: it divides the token-level loss by
    the number of active tokens in the local batch. The advantage computation is chosen by
    `advantage_normalizer`; TRL's `scale_rewards` and `multi_objective_aggregation` are then ignored.
    """

    advantage_normalizer: str = field(
        default="bnpo",
        metadata={
            "help": "How rewards become advantages: a registered normalizer (bnpo, ebpo, group, batch, none, "
            "rloo, median, or an alias) or 'package.module:ClassName'. Unrelated to TRL's `loss_type='bnpo'`, "
            "which is token-level loss aggregation."
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
        kwargs: Any = self.normalizer_kwargs
        if kwargs is None or kwargs == "":
            kwargs = {}
        elif isinstance(kwargs, str):
            try:
                kwargs = json.loads(kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(f"normalizer_kwargs must be a JSON object, got {kwargs!r}: {err}.") from err
        if not isinstance(kwargs, dict):
            raise ValueError(f"normalizer_kwargs must be a mapping, got {type(kwargs).__name__}.")
        self.normalizer_kwargs = kwargs
        check_launch(self)  # several processes that each train alone; ddp_timeout on CPU
        get_normalizer(
            self.advantage_normalizer, **kwargs
        )  # unknown name or option -> ValueError, before loading
        if self.loss_type == "bnpo" and self.advantage_normalizer not in ("bnpo", "beta"):
            logger.info(
                "loss_type='bnpo' is TRL's token-level loss aggregation, not Beta normalization; advantages "
                "come from advantage_normalizer=%r.",
                self.advantage_normalizer,
            )
