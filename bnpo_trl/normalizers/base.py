"""The normalizer interface and the registry that maps names to normalizer classes.

A stateless normalizer can be registered as a plain function ``f(rewards, group_size, **options)`` (add a
``lengths`` parameter to receive the completion lengths); the registry wraps it in a :class:`Normalizer`
subclass, so that validation, NaN handling and the trainer's interface are the same for every normalizer.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from bnpo_trl.normalizers.functional import combine_rewards

__all__ = [
    "MAX_ABS_REWARD",
    "Normalizer",
    "available_normalizers",
    "call_normalizer",
    "function_normalizer",
    "get_normalizer",
    "register_normalizer",
    "resolve_normalizer",
]

#: Rewards beyond this magnitude (and ±inf) are not scores: they count as unscored (NaN) and are counted in
#: ``nonfinite_rewards``; squared deviations of in-range rewards stay finite in float32.
MAX_ABS_REWARD = 2.0**50

_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}
_REQUIRED_ATTRS = ("__call__", "state_dict", "load_state_dict", "last_stats")


class Normalizer:
    """Turns gathered rewards into advantages; subclasses implement :meth:`compute`.

    Call as ``norm(rewards, group_size=G, data_sources=None, reward_weights=None, update=True,
    lengths=None)``:

    - ``rewards``: (N,) or (N, F) float tensor, ``N = P * G``, groups contiguous; NaN = not scored.
      ±inf and values beyond ±:data:`MAX_ABS_REWARD` (a reward model's overflow) are treated as NaN and
      counted in ``last_stats["nonfinite_rewards"]``; they never reach the running state.
    - ``lengths`` (keyword): (N,) completion token counts (the trainer passes them), finite and >= 0, else
      ValueError. They reach :meth:`compute` (as ``lengths=``, a float tensor of the rewards' dtype, or
      ``None`` when the caller gave none) only when the class sets ``uses_lengths = True``; any other
      normalizer ignores them and its ``compute`` is called with the five arguments below, as before.
    - returns (N,) float32 on the input's device, finite; rows whose rewards are all NaN get 0.
    - ``update=False`` leaves running state untouched (evaluation).
    - after a call, ``last_stats`` holds ``{"<name>/<stat>": float}`` to log.
    """

    name: str = "normalizer"
    #: True when the normalizer consumes the (N, F) matrix itself instead of the weighted sum.
    decomposes: bool = False
    #: True when it cannot work without one data source per row (the trainer then checks the column).
    requires_data_sources: bool = False
    #: True when it takes ``reward_range`` (the trainer then passes the reward functions' declared ranges).
    uses_reward_range: bool = False
    #: True when :meth:`compute` takes the keyword ``lengths`` ((N,) completion lengths, or None).
    uses_lengths: bool = False

    def __init__(self, eps: float = 1e-4) -> None:
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}.")
        self.eps = float(eps)
        self.last_stats: dict[str, float] = {}

    def compute(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
    ) -> torch.Tensor:
        """(N,) combined rewards (or (N, F) when ``decomposes``) -> (N,) advantages (NaN allowed).

        With ``uses_lengths = True`` it is also given ``lengths=``: (N,) float tensor or None.
        """
        raise NotImplementedError

    def __call__(
        self,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None = None,
        reward_weights: torch.Tensor | Sequence[float] | None = None,
        update: bool = True,
        *,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        rewards = torch.as_tensor(rewards)
        if not rewards.is_floating_point():
            rewards = rewards.float()
        if rewards.dtype in (torch.float16, torch.bfloat16):
            rewards = rewards.float()
        if rewards.dim() not in (1, 2):
            raise ValueError(f"rewards must have shape (N,) or (N, F), got {tuple(rewards.shape)}.")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}.")
        n = rewards.shape[0]
        if n % group_size:
            raise ValueError(
                f"{n} rewards cannot be split into groups of {group_size}: the number of rows must be a "
                "multiple of group_size (num_generations)."
            )
        if data_sources is not None and len(data_sources) != n:
            raise ValueError(
                f"data_sources has {len(data_sources)} entries for {n} rewards; pass one per row."
            )
        num_funcs = 1 if rewards.dim() == 1 else rewards.shape[1]
        if reward_weights is not None:
            reward_weights = torch.as_tensor(reward_weights, dtype=rewards.dtype, device=rewards.device)
            if reward_weights.shape != (num_funcs,):
                raise ValueError(
                    f"reward_weights has shape {tuple(reward_weights.shape)}, expected ({num_funcs},): "
                    "one weight per reward function."
                )
        if lengths is not None:
            lengths = _checked_lengths(lengths, n, rewards)
        invalid = torch.isinf(rewards) | (rewards.abs() > MAX_ABS_REWARD)
        rewards = rewards.masked_fill(invalid, float("nan"))
        unscored = torch.isnan(rewards) if rewards.dim() == 1 else torch.isnan(rewards).all(dim=1)
        inputs = (
            rewards if (self.decomposes and rewards.dim() == 2) else combine_rewards(rewards, reward_weights)
        )
        self.last_stats = {}
        if self.uses_lengths:
            adv = self.compute(inputs, group_size, data_sources, reward_weights, update, lengths=lengths)
        else:  # the five-argument signature of every normalizer written before lengths existed
            adv = self.compute(inputs, group_size, data_sources, reward_weights, update)
        self.last_stats["nonfinite_rewards"] = float(invalid.sum())
        adv = torch.nan_to_num(adv.float(), nan=0.0, posinf=0.0, neginf=0.0)
        return adv.masked_fill(unscored, 0.0).to(rewards.device)

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable running state ({} for stateless normalizers)."""
        return {}

    @property
    def stateful(self) -> bool:
        """True when the advantages depend on earlier batches (a resume must restore the state)."""
        return bool(self.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state with keys {sorted(state)}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def call_normalizer(norm: Any, rewards: Any, *, lengths: Any = None, **kwargs: Any) -> torch.Tensor:
    """``norm(rewards, **kwargs)``, with ``lengths=`` only for a normalizer that declares ``uses_lengths``, so
    that a duck-typed normalizer written before lengths existed keeps working."""
    if getattr(norm, "uses_lengths", False):
        kwargs["lengths"] = lengths
    return norm(rewards, **kwargs)


def _checked_lengths(lengths: Any, n: int, rewards: torch.Tensor) -> torch.Tensor:
    """``lengths`` as an (N,) float tensor like ``rewards``; ValueError unless finite, >= 0, one per row."""
    try:
        values = torch.as_tensor(lengths, device=rewards.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"lengths must be (N,) completion token counts, got {lengths!r}: {err}.") from err
    if values.shape != (n,):
        raise ValueError(
            f"lengths has shape {tuple(values.shape)} for {n} rewards; pass one completion length (token "
            "count) per row, in the rewards' order."
        )
    values = values.to(rewards.dtype)
    bad = ~torch.isfinite(values) | (values < 0)
    if bad.any():
        raise ValueError(
            f"lengths must be finite and >= 0 (completion token counts), got {values[bad][:5].tolist()} at "
            f"rows {bad.nonzero().flatten()[:5].tolist()}."
        )
    return values


def register_normalizer(
    name: str, aliases: Sequence[str] = (), *, class_name: str | None = None
) -> Callable[[Any], Any]:
    """Decorator adding a normalizer to the registry under ``name`` and ``aliases``; returns its argument.

    It takes a normalizer class, or a plain function ``f(rewards, group_size, **options) -> advantages``
    for a stateless normalizer: ``rewards`` is the (N,) weighted sum, ``options`` are the keyword
    arguments given to :func:`get_normalizer` (``eps`` is always accepted and passed on when ``f`` takes
    it; a parameter named ``lengths`` is not an option: it receives the (N,) completion lengths, or None,
    see :func:`function_normalizer`). The function is wrapped in a stateless :class:`Normalizer` subclass
    named ``class_name`` (default: from ``name``), which :func:`resolve_normalizer` returns.

    >>> import torch
    >>> @register_normalizer("doc_centred")
    ... def doc_centred(rewards, group_size, scale=1.0):
    ...     return scale * (rewards - rewards.view(-1, group_size).mean(dim=1).repeat_interleave(group_size))
    >>> get_normalizer("doc_centred", scale=2.0)(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)
    tensor([ 1., -1.,  0.,  0.])
    """

    def decorator(obj: Any) -> Any:
        for key in (name, *aliases):
            if key in _REGISTRY or key in _ALIASES:
                raise ValueError(f"A normalizer named {key!r} is already registered.")
        cls = obj if inspect.isclass(obj) or not callable(obj) else function_normalizer(obj, name, class_name)
        _check_interface(cls, name)
        _REGISTRY[name] = cls
        for alias in aliases:
            _ALIASES[alias] = name
        if getattr(cls, "name", None) in (None, Normalizer.name):
            cls.name = name
        return obj

    return decorator


def function_normalizer(
    func: Callable[..., torch.Tensor], name: str, class_name: str | None = None
) -> type[Normalizer]:
    """A stateless :class:`Normalizer` subclass whose ``compute`` is ``func(rewards, group_size, **options)``.

    Its constructor takes ``eps`` (validated by :class:`Normalizer`) and ``func``'s other keyword
    arguments, so :func:`get_normalizer` rejects unknown options for it as for any class. When ``func`` has
    a parameter named ``lengths``, the class has ``uses_lengths = True`` and ``func`` gets ``lengths=``
    ((N,) float tensor, or None when the caller passed none).
    """
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) < 2 or any(p.kind not in positional for p in params[:2]):
        raise TypeError(
            f"Normalizer function {name!r} must take (rewards, group_size, **options), got {signature}."
        )
    options = params[2:]
    if any(p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in options):
        raise TypeError(
            f"Normalizer function {name!r}: its options must be keyword arguments, got {signature}."
        )
    eps = next((p for p in options if p.name == "eps" and p.kind is not p.VAR_KEYWORD), None)
    takes_lengths = any(p.name == "lengths" and p.kind is not p.VAR_KEYWORD for p in options)
    eps_default = 1e-4 if eps is None or eps.default is eps.empty else eps.default
    var_kw = next((p.name for p in options if p.kind is p.VAR_KEYWORD), None)
    init_signature = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("eps", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=eps_default),
            *(
                p.replace(kind=p.KEYWORD_ONLY) if p.kind is not p.VAR_KEYWORD else p
                for p in options
                if p.name not in ("eps", "lengths") or p.kind is p.VAR_KEYWORD
            ),
        ]
    )

    def __init__(self: Normalizer, *args: Any, **kwargs: Any) -> None:
        bound = init_signature.bind(self, *args, **kwargs)  # TypeError on unknown or missing options
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self")
        Normalizer.__init__(self, eps=arguments.pop("eps"))
        extra = arguments.pop(var_kw, {}) if var_kw else {}
        self.options = {**arguments, **extra}

    __init__.__signature__ = init_signature  # type: ignore[attr-defined]

    def compute(
        self: Normalizer,
        rewards: torch.Tensor,
        group_size: int,
        data_sources: Sequence[str] | None,
        reward_weights: torch.Tensor | None,
        update: bool,
        lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        options = {**self.options, "eps": self.eps} if eps is not None else self.options
        if takes_lengths:
            options = {**options, "lengths": lengths}
        return func(rewards, group_size, **options)

    class_name = class_name or "".join(part.capitalize() for part in name.split("_")) + "Normalizer"
    return type(
        class_name,
        (Normalizer,),
        {
            "__init__": __init__,
            "compute": compute,
            "__doc__": func.__doc__,
            "__module__": func.__module__,
            "__qualname__": class_name,
            "uses_lengths": takes_lengths,
        },
    )


def available_normalizers(include_aliases: bool = True) -> list[str]:
    """Registered names (and aliases), sorted."""
    return sorted([*_REGISTRY, *_ALIASES] if include_aliases else _REGISTRY)


def _check_interface(cls: Any, label: str) -> None:
    if not inspect.isclass(cls):
        raise TypeError(f"{label!r} must be a class, got {type(cls).__name__}.")
    # Look the methods up on the class's MRO: getattr(cls, "__call__") would find type.__call__ (the
    # metaclass's, which instantiates the class) and so accept a class whose instances are not callable.
    missing = [
        a
        for a in _REQUIRED_ATTRS
        if a != "last_stats"
        and not (callable(getattr(cls, a, None)) and any(a in vars(k) for k in inspect.getmro(cls)))
    ]
    if missing:
        raise TypeError(
            f"{label!r} does not implement the normalizer interface: missing {missing}. Subclass "
            "bnpo_trl.normalizers.Normalizer or define __call__(rewards, group_size, data_sources, "
            "reward_weights, update[, *, lengths]), state_dict(), load_state_dict(d) and a last_stats dict."
        )


def resolve_normalizer(name: str) -> type:
    """Registered name, alias or ``"package.module:ClassName"`` -> normalizer class."""
    if name in _ALIASES:
        name = _ALIASES[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"Cannot import normalizer {name!r}: {err}.") from err
        _check_interface(cls, name)
        return cls
    raise ValueError(
        f"Unknown normalizer {name!r}. Available: {', '.join(available_normalizers())}; "
        "or pass 'package.module:ClassName' for your own class."
    )


def get_normalizer(name: str | Mapping[str, Any], **kwargs: Any) -> Normalizer:
    """Instantiate a normalizer by name, alias or ``"package.module:ClassName"``, or from a mapping:
    ``{"name": "bnpo", "ema": 0.9}`` (a name with options) or ``{"center": ..., "scale": ..., "post": [...]}``
    (a :class:`~bnpo_trl.normalizers.algebra.ComposedNormalizer`); ``kwargs`` add to the mapping's options.

    >>> get_normalizer({"center": "ebpo", "scale": "bnpo"})
    ComposedNormalizer('center=ebpo,scale=bnpo')
    """
    if isinstance(name, Mapping):
        spec = {**name, **kwargs}
        if "name" in spec:
            return get_normalizer(spec.pop("name"), **spec)
        from bnpo_trl.normalizers.algebra import ComposedNormalizer

        allowed = set(inspect.signature(ComposedNormalizer).parameters)
        unknown = sorted(set(spec) - allowed)
        if unknown or not {"center", "scale"} & set(spec):
            raise ValueError(
                f"A normalizer mapping is {{name: ..., option: ...}} or {{center: ..., scale: ..., post: [...]}} "
                f"with keys among {sorted(allowed)}; got keys {sorted(spec)}."
            )
        return ComposedNormalizer(**spec)
    cls = resolve_normalizer(name)
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"Normalizer {name!r} does not accept {unknown}; its options are {sorted(params)}."
            )
    norm = cls(**kwargs)
    if not isinstance(getattr(norm, "last_stats", None), dict):
        raise TypeError(f"Normalizer {name!r} must set a dict attribute `last_stats` in __init__.")
    return norm
