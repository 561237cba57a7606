"""Dataset loaders for RL with verifiable rewards on math.

Every loader returns a ``datasets.Dataset`` with this column contract:

- ``prompt``: conversational prompt, a list of ``{"role", "content"}`` messages: an optional system
  message (``system_prompt``; ``None`` omits it) followed by one user message holding the problem.
- ``answer``: the gold answer as a string (e.g. ``"27"``, ``"\\frac{1}{2}"``).
- ``data_source``: a string naming where the row came from (the registry name by default).
- ``difficulty``: always present, ``float`` or ``None``. MATH and MATH-500 give the level (1-5);
  GSM8K, AIME, AMC and DAPO give ``None``; local files give the column mapped as ``difficulty``
  (else ``None``).

Columns named in ``keep_columns`` are carried over from the source as they are.

Sources live in a registry (:data:`DATASETS`, :func:`register_dataset`); each :class:`DatasetSpec`
carries its own ``load``. Built in: ``math``, ``math500``, ``gsm8k``, ``aime24``, ``aime25``,
``amc23``, ``dapo`` (:mod:`bnpo_trl.data.sources`), ``local`` (any ``jsonl``/``json``/``parquet``/``csv``
file with a ``column_map``) and ``arithmetic`` (registered by :mod:`bnpo_trl.tasks`). Every Hub source
also takes ``path=`` to read a local file of the same schema instead, which is how the tests run offline.

Modules: :mod:`~bnpo_trl.data.registry` (specs and the registry), :mod:`~bnpo_trl.data.rows` (row
parsers), :mod:`~bnpo_trl.data.loading` (reading and the shared filtering), :mod:`~bnpo_trl.data.sources`
(the built-in specs), :mod:`~bnpo_trl.data.mixture` and :mod:`~bnpo_trl.data.curriculum`.
See ``docs/data.md`` for the full rules.
"""

from __future__ import annotations

import logging

import bnpo_trl.data.sources
import bnpo_trl.tasks  # noqa: F401  (registers "arithmetic")
from bnpo_trl.answers import extract_gsm8k_answer, last_boxed, normalize_answer
from bnpo_trl.data.curriculum import CURRICULA, apply_curriculum
from bnpo_trl.data.loading import load_dataset_by_name, load_local, load_local_source, load_schema_source
from bnpo_trl.data.mixture import MixtureEntry, load_mixture, mixture_sizes
from bnpo_trl.data.registry import (
    DATASETS,
    DEFAULT_SYSTEM_PROMPT,
    DatasetSpec,
    LoadOptions,
    available_datasets,
    register_dataset,
    resolve_dataset,
)
from bnpo_trl.data.rows import extract_dapo_problem

#: Parent logger of the data modules (``bnpo_trl.data.loading`` etc. propagate to it).
logger = logging.getLogger(__name__)

#: The old name of :func:`bnpo_trl.answers.last_boxed`, kept so that existing imports keep working.
extract_boxed = last_boxed

__all__ = [
    "CURRICULA",
    "DATASETS",
    "DEFAULT_SYSTEM_PROMPT",
    "DatasetSpec",
    "LoadOptions",
    "MixtureEntry",
    "apply_curriculum",
    "available_datasets",
    "extract_boxed",
    "extract_dapo_problem",
    "extract_gsm8k_answer",
    "load_dataset_by_name",
    "load_local",
    "load_local_source",
    "load_mixture",
    "load_schema_source",
    "mixture_sizes",
    "normalize_answer",
    "register_dataset",
    "resolve_dataset",
]
