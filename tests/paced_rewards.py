"""A reward for the preemption tests: 1.0 for an even number of characters (mixed outcomes, so the
normalizer state is not trivial), slowed to a known pace per step so that a test can stop a run between two
checkpoints (a training step of the tiny model alone takes ~0.1 s)."""

from __future__ import annotations

import time

from tests.trainer_utils import parity_reward


def paced_parity(completions, **kwargs):
    time.sleep(0.4)
    return parity_reward(completions)


paced_parity.reward_range = (0.0, 1.0)
