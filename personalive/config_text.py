"""Config values as text: ``--set key=value`` items, YAML files, nested mappings as dotted keys.

The values are parsed as YAML (so ``1``, ``1.5``, ``true``, ``null``, ``[1, 2]`` work); checking them against the
typed config is :mod:`personalive.config`'s job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from personalive.errors import ConfigError


def flatten_keys(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, value); the value is parsed as YAML (so 1, 1.5, true, null, [1,2] work)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set generation.seed=7")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def read_yaml(path: Path) -> dict:
    """A config file's top-level mapping; a missing file, bad YAML or another shape is a one-line error."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data
