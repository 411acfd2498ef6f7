"""Config files read into keyword-only dataclasses: the YAML loader and the checks every config shares
(the pipeline's, an experiment's, the pool builder's).

A section is a dataclass that validates itself in __post_init__; build_section fills it from a mapping,
checking each value against the field's type hint. Unknown keys are errors that name the key and the
file, with the nearest known key as a suggestion, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from dataio import uri as U

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_plain_name(value: Any) -> bool:
    """One plain path component: letters, digits, _ . - only, starting with a letter or digit."""
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def check_name(value: Any, key: str) -> None:
    """A run or experiment name becomes a folder name (Ray Train's storage, experiment outputs): one
    plain path component, so `../../x` or `a/b` cannot write outside the folder meant for it."""
    if not is_plain_name(value):
        raise ValueError(
            f"{key} {value!r} is not a plain name (letters, digits, _ . - only, starting with a "
            "letter or digit; no path separators)"
        )


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a duplicate is almost always an edit
    gone wrong, so it is an error naming the key and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:  # before merges (`<<`) are flattened: overriding a merged key is fine
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(f"line {line}: duplicate key '{key}' (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(ValueError):
    pass


def read_yaml(path: str | Path) -> Any:
    """The YAML document in `path` (a local path or a URI); errors (syntax, duplicate keys) name the file."""
    try:
        return yaml.load(U.read_text(str(path)), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ValueError(f"{path}, {e}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML ({e})") from e


def did_you_mean(key: Any, names: list[str]) -> str:
    """` (did you mean 'NAME'?)` for the known name nearest to `key`, or nothing when none is near."""
    close = difflib.get_close_matches(str(key), names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build_section(cls: type, data: Any, where: str, source: str) -> Any:
    """The dataclass `cls` filled from the mapping `data`, read under the key `where` of the file
    `source`; every error (unknown or missing key, wrong type, the section's own checks) names both."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: '{where}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # WarmStartConfig.subset is fixed
    names = [f.name for f in fields]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"{source}: unknown key '{_key(where, key)}'{did_you_mean(key, names)}")
        kwargs[key] = _coerce(hints[key], value, _key(where, key), source)
    for f in fields:
        if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{source}: '{_key(where, f.name)}' is required")
    try:
        return cls(**kwargs)
    except ValueError as e:
        message, first = str(e), re.match(r"\w+", str(e))
        # A section shared by several keys (TrainConfig is `train` and `warmstart`) names its fields
        # bare; the key it was read under is prefixed here.
        if where and first and first[0] in names:
            message = f"{where}.{message}"
        raise ValueError(f"{source}: {message}") from e


def _key(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _coerce(hint: Any, value: Any, where: str, source: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, where, source)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        options = tuple(a for a in options if a is not type(None))
        if len(options) == 1:  # `X | None`: X's own error (a section's names the key inside it)
            return _coerce(options[0], value, where, source)
        errors = []
        for option in options:
            try:
                return _coerce(option, value, where, source)
            except ValueError as e:
                errors.append(str(e).rpartition(" must be ")[2].rpartition(", got ")[0])
        raise ValueError(f"{source}: '{where}' must be {' or '.join(errors)}, got {value!r}")
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if not any(value == c and type(value) is type(c) for c in choices):
            raise ValueError(f"{source}: '{where}' must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ValueError(f"{source}: '{where}' must be a list, got {value!r}")
        return [_coerce(typing.get_args(hint)[0], v, where, source) for v in value]
    ok = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        bool: lambda v: isinstance(v, bool),
    }
    if hint in ok and not ok[hint](value):
        raise ValueError(f"{source}: '{where}' must be {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def check_choices(section: Any, where: str) -> None:
    """Every `Literal` field of a config section holds one of its choices (a section built in code,
    e.g. by dataclasses.replace, is checked as one read from YAML)."""
    hints = typing.get_type_hints(type(section))
    for f in dataclasses.fields(section):
        hint = hints[f.name]
        if typing.get_origin(hint) is Literal and getattr(section, f.name) not in typing.get_args(hint):
            raise ValueError(
                f"{where}.{f.name} must be one of {', '.join(typing.get_args(hint))}, got {getattr(section, f.name)!r}"
            )


def section_dict(section: Any, *, resources: bool = True) -> dict[str, Any]:
    """A config section as the dict its YAML would hold (nested sections too; fixed fields such as
    WarmStartConfig.subset left out), without the resource fields (its `RESOURCES`) unless `resources`."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        if f.init and (resources or f.name not in getattr(section, "RESOURCES", ())):
            value = getattr(section, f.name)
            out[f.name] = (
                section_dict(value, resources=resources) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
            )
    return out


def result_settings(section: Any) -> dict[str, Any]:
    """What a stage's output depends on: the section without its resource fields, so a stage hash never
    covers a CPU count, and without the settings it lists in `ADDED` while they hold their default, so a
    setting added to the project later leaves finished run directories' hashes as they were."""
    settings = section_dict(section, resources=False)
    defaults = {f.name: f for f in dataclasses.fields(section)}
    for name in getattr(section, "ADDED", ()):
        f = defaults[name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if settings.get(name) == default:
            del settings[name]
    return settings
