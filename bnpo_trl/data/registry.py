"""The dataset registry: what a source is (:class:`DatasetSpec`), what a caller asked for
(:class:`LoadOptions`) and the name -> spec table (:data:`DATASETS`).

A spec carries its own ``load`` callable, so :func:`~bnpo_trl.data.load_dataset_by_name` only resolves a
name and hands the options over: a new source (a Hub dataset, a generator such as
:mod:`bnpo_trl.tasks`' ``arithmetic``) is one :func:`register_dataset` call, with no branch to add
anywhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "DATASETS",
    "DEFAULT_SYSTEM_PROMPT",
    "DatasetSpec",
    "LoadOptions",
    "Loader",
    "RowParser",
    "available_datasets",
    "register_dataset",
    "resolve_dataset",
]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

#: A row parser turns one source row into ``{"problem", "answer", "difficulty"}`` (answer may be None).
RowParser = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class LoadOptions:
    """The keyword arguments of :func:`~bnpo_trl.data.load_dataset_by_name`, as one value handed to a
    spec's ``load`` (see there for their meaning). A loader uses the ones that apply to its source."""

    split: str | None = None
    path: str | os.PathLike[str] | None = None
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    limit: int | None = None
    column_map: Mapping[str, str] | None = None
    data_source: str | None = None
    user_template: str = "{problem}"
    keep_columns: Sequence[str] = ()
    dedupe: bool | None = None
    hub_id: str | None = None
    config: str | None = None
    revision: str | None = None
    num_proc: int | None = None
    cache_dir: str | None = None
    report: dict[str, int] | None = field(default=None, compare=False)


#: A spec's loader: ``load(spec, options) -> Dataset`` in the column contract.
Loader = Callable[["DatasetSpec", LoadOptions], "Dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    """One registered source: where it lives, how its rows map to the column contract, and how to load it.

    Attributes:
        name: Registry name (also the default ``data_source``).
        load: ``load(spec, options)`` -> the dataset. Hub sources use
            :func:`~bnpo_trl.data.loading.load_schema_source` (read the Hub or ``path=``, check
            ``required_columns``, parse rows with ``parser``).
        hub_id: Default Hugging Face Hub dataset id (``hub_id=`` overrides it per call).
        config: Hub config name, if any.
        default_split: Split used when ``split`` is not given.
        required_columns: Source columns the parser needs (checked with a clear error). An entry that is a
            tuple of names is satisfied by any one of them (AMC 2023 copies name the text ``question`` or
            ``problem``); the error names the first.
        parser: Row parser for :func:`~bnpo_trl.data.loading.load_schema_source`; ``None`` for sources
            whose ``load`` builds rows itself.
        has_difficulty: Whether the source gives a difficulty.
        dedupe: Whether duplicate problems are dropped by default (DAPO-Math-17k repeats each ~100x).
        description: One line for listings.
        aliases: Other names that resolve to this spec (matched lower-cased).
    """

    name: str
    load: Loader
    hub_id: str | None = None
    config: str | None = None
    default_split: str = "train"
    required_columns: tuple[str | tuple[str, ...], ...] = ()
    parser: RowParser | None = None
    has_difficulty: bool = False
    dedupe: bool = False
    description: str = ""
    aliases: tuple[str, ...] = field(default=())


#: Registry name -> spec. Filled by :func:`register_dataset` (the built-in sources and ``arithmetic``
#: register themselves when :mod:`bnpo_trl.data` is imported).
DATASETS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` so that :func:`~bnpo_trl.data.load_dataset_by_name` and mixtures
    accept its name and aliases; returns ``spec``.

    A name or alias that is already taken raises ``ValueError`` unless ``replace=True`` (which drops the
    old spec's aliases), so two plugins cannot silently shadow each other.
    """
    name = spec.name.strip().lower()
    if name != spec.name:
        raise ValueError(f"Dataset names are lower-case without spaces around them, got {spec.name!r}.")
    if replace and name in DATASETS:
        for alias in DATASETS.pop(name).aliases:
            _ALIASES.pop(alias, None)
    taken = [key for key in (name, *spec.aliases) if key in DATASETS or key in _ALIASES]
    if taken:
        raise ValueError(
            f"Cannot register dataset {spec.name!r}: {taken} already registered "
            "(pass replace=True to replace a spec of the same name)."
        )
    DATASETS[name] = spec
    _ALIASES.update({alias: name for alias in spec.aliases})
    return spec


def available_datasets() -> list[str]:
    """Registry names accepted by :func:`~bnpo_trl.data.load_dataset_by_name` (aliases not included)."""
    return sorted(DATASETS)


def resolve_dataset(name: str) -> DatasetSpec:
    """The spec registered under ``name`` or one of its aliases (case and surrounding space ignored)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"Unknown dataset name {name!r}. Available: {', '.join(available_datasets())} "
            "(or 'local' with path=... and column_map=... for your own file)."
        )
    return DATASETS[key]
