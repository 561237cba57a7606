"""Settings that YAML gives as mappings or lists and the command line as JSON text."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_setting", "mapping_setting"]


def json_setting(value: Any, name: str, kind: type, empty: Any = None) -> Any:
    """``value`` as YAML gives it, or parsed from its JSON form on the command line; ``empty`` for None/"".

    >>> json_setting("[1, 2]", "xs", list), json_setting("", "xs", list, [])
    ([1, 2], [])
    """
    if value is None or value == "":
        return empty
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{name} must be a {kind.__name__} or its JSON form, got {value!r}: {err}."
            ) from err
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}.")
    return value


def mapping_setting(value: Any, name: str) -> dict | None:
    """A mapping field as YAML gives it or as a JSON string from the command line (None when empty).

    >>> mapping_setting('{"problem": "question"}', "column_map"), mapping_setting("", "column_map")
    ({'problem': 'question'}, None)
    """
    return json_setting(value, name, dict)
