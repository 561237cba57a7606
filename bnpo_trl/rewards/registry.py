"""The reward registry: names in a YAML recipe -> reward functions with TRL's signature.

A recipe's ``rewards`` entry is a list whose items are

- a registered name (``accuracy``),
- a mapping with a ``name`` and keyword arguments (``{name: overlong, max_length: 512}``),
- ``"package.module:function"`` (optionally with kwargs: ``{name: "my_pkg.rewards:f", scale: 2}``), which
  imports a user function.

:func:`get_reward_funcs` checks every name and keyword argument up front, so a typo fails before the
model is loaded, and returns plain callables (``functools.partial`` when there are kwargs, which TRL
names after the wrapped function and which pickle).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "RewardFunc",
    "available_rewards",
    "get_reward_funcs",
    "register_reward",
    "resolve_reward",
    "reward_range_of",
]

#: TRL's reward signature: ``f(prompts=..., completions=..., completion_ids=..., **columns) -> list``.
RewardFunc = Callable[..., list[float | None]]
RewardSpec = str | Mapping[str, Any] | RewardFunc

#: Keyword arguments that TRL passes itself; a recipe cannot set them.
_RESERVED = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)

_REGISTRY: dict[str, RewardFunc] = {}
_VALIDATORS: dict[str, Callable[..., None]] = {}
_RANGES: dict[str, Callable[..., tuple[float, float] | None]] = {}

#: A reward's declared range: a fixed ``(lo, hi)``, or ``f(**recipe_kwargs) -> (lo, hi) | None``.
RangeSpec = tuple[float, float] | Callable[..., "tuple[float, float] | None"]


def register_reward(
    name: str, *, validate: Callable[..., None] | None = None, reward_range: RangeSpec | None = None
) -> Callable[[RewardFunc], RewardFunc]:
    """Register a reward function under ``name`` (a decorator; the function is returned unchanged).

    ``validate(**kwargs)``, if given, is called by :func:`get_reward_funcs` with the recipe's kwargs and
    should raise ``ValueError`` naming the fix. ``reward_range`` declares the values the reward can take,
    ``(lo, hi)`` or a function of the recipe's kwargs; :func:`resolve_reward` stores it as the returned
    callable's ``reward_range`` attribute, which the trainer hands to range-based normalizers (``bnpo``).

    Example:
        >>> from bnpo_trl.rewards import register_reward, get_reward_funcs
        >>> @register_reward("doc_length_bonus")
        ... def doc_length_bonus(completions, *, scale=1.0, **kwargs):
        ...     return [float(scale) * len(c) for c in completions]
        >>> [f(completions=["ab", "abc"]) for f in get_reward_funcs([{"name": "doc_length_bonus", "scale": 2}])]
        [[4.0, 6.0]]
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ValueError(
            f"a reward name must be a non-empty string without ':' or spaces around it, got {name!r}"
        )

    def decorator(func: RewardFunc) -> RewardFunc:
        if not callable(func):
            raise TypeError(f"register_reward({name!r}) decorates a function, got {type(func).__name__}")
        existing = _REGISTRY.get(name)
        if existing is not None and _qualname(existing) != _qualname(func):
            raise ValueError(
                f"reward {name!r} is already registered ({_qualname(existing)}); pick another name for "
                f"{_qualname(func)}"
            )
        _REGISTRY[name] = func
        if validate is not None:
            _VALIDATORS[name] = validate
        if reward_range is not None:
            _RANGES[name] = reward_range if callable(reward_range) else lambda **_: reward_range
            func.reward_range = _checked_range(name, _RANGES[name]())  # type: ignore[attr-defined]
        return func

    return decorator


def available_rewards() -> list[str]:
    """The registered reward names, sorted.

    Example:
        >>> from bnpo_trl.rewards import available_rewards
        >>> {"accuracy", "boxed_format", "cosine", "overlong", "per_source", "repetition"} <= set(available_rewards())
        True
    """
    return sorted(_REGISTRY)


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(func).__name__)}"


def _import_function(path: str) -> RewardFunc:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a user reward is written 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"cannot import module {module_name!r} for reward {path!r}: {error}. Is it installed or on PYTHONPATH?"
        ) from error
    func = module
    for part in attr.split("."):
        try:
            func = getattr(func, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (reward {path!r})") from None
    if not callable(func):
        raise ValueError(f"reward {path!r} is not callable (it is a {type(func).__name__})")
    return func


def _lookup(name: str) -> RewardFunc:
    if ":" in name:
        return _import_function(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown reward {name!r}.{hint} Available rewards: {', '.join(available_rewards())}. "
            "For your own function write 'package.module:function'."
        ) from None


def _check_kwargs(name: str, func: RewardFunc, kwargs: Mapping[str, Any]) -> None:
    reserved = sorted(set(kwargs) & _RESERVED)
    if reserved:
        raise ValueError(
            f"reward {name!r}: {reserved} are passed by the trainer and cannot be set in a recipe"
        )
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check against
        return
    settable = {
        p.name
        for p in parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _RESERVED
    }
    unknown = sorted(set(kwargs) - settable)
    if unknown:
        accepted = ", ".join(sorted(settable)) or "none"
        raise ValueError(
            f"reward {name!r} does not take {', '.join(map(repr, unknown))}; its keyword arguments are: {accepted}"
        )
    missing = sorted(
        p.name
        for p in parameters.values()
        if p.kind == p.KEYWORD_ONLY
        and p.default is p.empty
        and p.name not in kwargs
        and p.name not in _RESERVED
    )
    if missing:
        example = ", ".join(f"{m}: ..." for m in missing)
        raise ValueError(f"reward {name!r} needs {', '.join(missing)}: write {{name: {name}, {example}}}")


def resolve_reward(spec: RewardSpec) -> RewardFunc:
    """One reward from one recipe entry (see the module docstring); kwargs are checked, then bound.

    Examples:
        >>> from bnpo_trl.rewards import resolve_reward
        >>> resolve_reward("acuracy")
        Traceback (most recent call last):
        ...
        ValueError: unknown reward 'acuracy'. Did you mean 'accuracy'? Available rewards: ...
    """
    if callable(spec) and not isinstance(spec, str):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec.strip(), {}
    elif isinstance(spec, Mapping):
        if "name" not in spec:
            raise ValueError(f"reward entry {dict(spec)!r} has no 'name'; write {{name: accuracy, <kwargs>}}")
        name, kwargs = spec["name"], {k: v for k, v in spec.items() if k != "name"}
        if not isinstance(name, str):
            raise ValueError(f"a reward 'name' must be a string, got {name!r}")
    else:
        raise ValueError(
            f"a reward entry is a name, a {{name: ..., <kwargs>}} mapping or a function, got {type(spec).__name__}"
        )
    func = _lookup(name)
    _check_kwargs(name, func, kwargs)
    if name in _VALIDATORS:
        _VALIDATORS[name](**kwargs)
    if not kwargs:
        return func
    bound = functools.partial(func, **kwargs)
    if name in _RANGES:
        bound.reward_range = _checked_range(name, _RANGES[name](**kwargs))  # type: ignore[attr-defined]
    return bound


def _checked_range(name: str, value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = (float(x) for x in value)
    if not hi >= lo:
        raise ValueError(f"reward {name!r}: its range must be (lo, hi) with hi >= lo, got {value!r}")
    return lo, hi


def reward_range_of(func: Any) -> tuple[float, float] | None:
    """The ``(lo, hi)`` a reward function declares (its ``reward_range`` attribute), or ``None``.

    Registered rewards declare theirs (``accuracy`` (0, 1), ``overlong`` (-1, 0), ``cosine`` its configured
    bounds, ...); for your own function set ``my_reward.reward_range = (lo, hi)``. A reward model (a string
    or a model in ``reward_funcs``) has none.

    Examples:
        >>> from bnpo_trl.rewards import get_reward_funcs, reward_range_of
        >>> [reward_range_of(f) for f in get_reward_funcs(["accuracy", {"name": "repetition", "max_penalty": -2}])]
        [(0.0, 1.0), (-2.0, 0.0)]
    """
    while isinstance(func, functools.partial) and not hasattr(func, "reward_range"):
        func = func.func  # a user function bound to kwargs keeps the range it declares
    value = getattr(func, "reward_range", None)
    return None if value is None else _checked_range(_callable_name(func), value)


def _callable_name(func: Callable[..., Any]) -> str:
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


def get_reward_funcs(spec: RewardSpec | Sequence[RewardSpec]) -> list[RewardFunc]:
    """The reward functions of a recipe's ``rewards`` entry, ready for ``GRPOTrainer(reward_funcs=...)``.

    Examples:
        >>> import yaml
        >>> from bnpo_trl.rewards import get_reward_funcs
        >>> recipe = yaml.safe_load('''
        ... rewards:
        ...   - accuracy
        ...   - {name: overlong, max_length: 100, cache_length: 20}
        ... ''')
        >>> funcs = get_reward_funcs(recipe["rewards"])
        >>> funcs[1](completions=["a"], completion_ids=[[0] * 90])
        [-0.5]
        >>> get_reward_funcs([{"name": "overlong", "max_lenght": 100}])
        Traceback (most recent call last):
        ...
        ValueError: reward 'overlong' does not take 'max_lenght'; its keyword arguments are: cache_length, max_length
    """
    if isinstance(spec, str | Mapping) or callable(spec):
        spec = [spec]
    if not isinstance(spec, Sequence) or not spec:
        raise ValueError(
            f"rewards must be a non-empty list of names or {{name: ..., <kwargs>}} entries, got {spec!r}"
        )
    funcs = [resolve_reward(item) for item in spec]
    names = [_callable_name(f) for f in funcs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        warnings.warn(
            f"rewards {duplicates} appear more than once: TRL logs them under the same name "
            f"(rewards/<name>/mean), so their curves are merged",
            stacklevel=2,
        )
    return funcs
