"""The reward registry: names, YAML specs with kwargs, user functions, and the errors for bad specs."""

from __future__ import annotations

import functools
import pickle

import pytest
import yaml
from trl.trainer.utils import get_callable_name

from bnpo_trl.rewards import available_rewards, get_reward_funcs, register_reward, resolve_reward

BUILTINS = {
    "accuracy",
    "boxed_format",
    "cosine",
    "gsm8k",
    "overlong",
    "per_source",
    "repetition",
    "think_format",
}


def test_builtins_are_registered_under_the_name_trl_logs() -> None:
    assert set(available_rewards()) >= BUILTINS
    assert available_rewards() == sorted(available_rewards())
    for name in BUILTINS:
        (func,) = get_reward_funcs(
            [name] if name not in ("overlong", "cosine") else [{"name": name, "max_length": 8}]
        )
        assert get_callable_name(func) == name  # TRL's metric name: rewards/<name>/mean


def test_yaml_spec_with_kwargs() -> None:
    recipe = yaml.safe_load(
        """
        rewards:
          - boxed_format
          - {name: think_format, prefilled: true}
          - name: overlong
            max_length: 10
            cache_length: 4
          - name: repetition
            ngram_size: 2
            unit: words
          - name: per_source
            mapping:
              "gsm8k*": {name: gsm8k, strict: true}
              "*": boxed_format
        """
    )
    funcs = get_reward_funcs(recipe["rewards"])
    completions = ["a a a a </think> \\boxed{7}", "7 </think>#### 7"]
    kwargs = {
        "prompts": ["p", "q"],
        "completions": completions,
        "completion_ids": [[1] * 5, [1] * 8],
        "answer": ["7", "7"],
        "data_source": ["math", "gsm8k_main"],
    }
    results = [f(**kwargs) for f in funcs]
    assert results == [
        [1.0, 0.0],  # boxed_format
        [1.0, 1.0],  # think_format with the <think> in the prompt
        [0.0, -0.5],  # overlong: 8 tokens is 2 into the 4-token band before 10
        [-2 / 5, 0.0],  # "a a a a </think> \boxed{7}": 5 bigrams, 3 distinct
        [1.0, 1.0],  # per_source: math -> boxed_format, gsm8k_main -> strict gsm8k
    ]


def test_single_entry_and_callables_pass_through() -> None:
    def mine(completions, **kwargs):
        return [0.0] * len(completions)

    funcs = get_reward_funcs("boxed_format")
    assert len(funcs) == 1
    assert get_reward_funcs([mine, "boxed_format"])[0] is mine


def test_user_function_by_import_path() -> None:
    with pytest.raises(ValueError, match="needs max_length"):  # user functions are checked the same way
        get_reward_funcs(["bnpo_trl.rewards.shaping:overlong"])
    (func,) = get_reward_funcs(
        [{"name": "bnpo_trl.rewards.shaping:overlong", "max_length": 4, "cache_length": 2}]
    )
    assert func(completion_ids=[[1] * 3]) == [-0.5]


def test_unknown_name_lists_available_rewards() -> None:
    with pytest.raises(
        ValueError, match=r"unknown reward 'acuracy'\. Did you mean 'accuracy'\? Available rewards: "
    ) as error:
        get_reward_funcs(["acuracy"])
    for name in BUILTINS:
        assert name in str(error.value)
    assert "package.module:function" in str(error.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"max_length": 3}], r"has no 'name'; write \{name: accuracy"),
        ([{"name": 3}], "a reward 'name' must be a string"),
        ([3], "a reward entry is a name"),
        ([], "non-empty list"),
        (
            [{"name": "overlong"}],
            r"reward 'overlong' needs max_length: write \{name: overlong, max_length: \.\.\.\}",
        ),
        (
            [{"name": "accuracy", "timout": 3}],
            r"does not take 'timout'; its keyword arguments are: cpu_timeout, ",
        ),
        ([{"name": "accuracy", "log_metric": None}], "passed by the trainer"),
        ([{"name": "accuracy", "timeout": -1}], "timeout must be a number of seconds > 0"),
        ([{"name": "accuracy", "workers": 0}], "workers must be a positive integer"),
        ([{"name": "accuracy", "timeout": 2, "cpu_timeout": 3}], r"cpu_timeout must be in \(0, timeout=2\]"),
        ([{"name": "cosine", "max_length": 10, "memory_mb": 10}], "memory_mb must be an integer >= 256"),
        (
            [{"name": "per_source", "mapping": {"*": {"name": "accuracy", "workers": -1}}}],
            "workers must be a positive integer",
        ),
        (
            [{"name": "overlong", "max_length": 10, "cache_length": 11}],
            r"cache_length must be an integer in \[1, ",
        ),
        ([{"name": "repetition", "max_penalty": 0.5}], "max_penalty must be <= 0"),
        ([{"name": "repetition", "unit": "chars"}], "unit must be 'tokens'"),
        ([{"name": "cosine", "max_length": 0}], "max_length must be a positive integer"),
        ([{"name": "per_source", "mapping": {"*": "acuracy"}}], "unknown reward 'acuracy'"),
        ([{"name": "per_source", "mapping": {"*": "per_source"}}], "cannot be per_source itself"),
        ([{"name": "per_source", "mapping": {}}], "mapping must be a non-empty"),
        (["no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
        (["bnpo_trl.rewards:no_such_function"], "has no attribute 'no_such_function'"),
        (["bnpo_trl.rewards.text:__all__"], "is not callable"),
        (["pkg:"], "package.module:function"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message) -> None:
    with pytest.raises(ValueError, match=message):
        get_reward_funcs(spec)


def test_register_reward() -> None:
    @register_reward("test_registry_constant")
    def constant(completions, *, value: float = 1.0, **kwargs):
        return [value] * len(completions)

    assert "test_registry_constant" in available_rewards()
    (func,) = get_reward_funcs([{"name": "test_registry_constant", "value": 0.25}])
    assert func(completions=["a", "b"]) == [0.25, 0.25]
    register_reward("test_registry_constant")(constant)  # the same function again (a module reload): fine

    def other(completions, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_registry_constant")(other)
    for bad in ["", "a:b", " padded "]:
        with pytest.raises(ValueError, match="reward name"):
            register_reward(bad)


def test_bound_rewards_pickle_and_keep_their_name() -> None:
    (func,) = get_reward_funcs([{"name": "repetition", "ngram_size": 2}])
    assert isinstance(func, functools.partial)
    clone = pickle.loads(pickle.dumps(func))
    assert clone(completion_ids=[[5, 5, 5, 5, 5]]) == func(completion_ids=[[5, 5, 5, 5, 5]]) == [-0.75]
    assert get_callable_name(clone) == "repetition"


def test_duplicate_names_warn() -> None:
    with pytest.warns(UserWarning, match="appear more than once"):
        get_reward_funcs(["boxed_format", "boxed_format"])


def test_resolve_reward_returns_the_function_itself_without_kwargs() -> None:
    from bnpo_trl.rewards import boxed_format

    assert resolve_reward("boxed_format") is boxed_format
