"""Typed job configs: dataclasses loaded from YAML, overridden with ``key=value``, validated.

Every job config is a dataclass whose fields carry a ``doc`` in their metadata (see
:func:`field`); a class-level ``REFUSED_KEYS`` mapping names keys it does not take and what to
do instead. Loading goes YAML file -> ``key=value`` overrides (dotted keys reach nested
dataclasses) -> type coercion -> the config's own ``validate()``. Every error names the field
and says how to fix it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or of the wrong type; the message names the field."""


def field(default: Any = dataclasses.MISSING, *, doc: str, factory: Any = None) -> Any:
    """A dataclass field with its documentation (shown by ``policylm <job> --help-config``)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def overwrite_field() -> Any:
    """The ``overwrite`` key every job has: replace what ``out=`` holds."""
    return field(False, doc="replace the policylm run out= already holds (without it, a "
                            "non-empty out= is refused, so runs never mix; a directory that "
                            "holds no run.json is never deleted)")


def resume_field(what: str) -> Any:
    """The ``resume`` key of jobs that can continue a run: ``what`` they keep."""
    return field(False, doc=f"continue the run in out= (its stored settings must match): "
                            f"{what}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}``; values parse as YAML,
    except that only ``{k: v}`` makes a mapping (``policy=random:`` stays the string)."""
    out: dict[str, Any] = {}
    for i, item in enumerate(items):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value; write e.g. seed=3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
            # a mapping is written {k: v}; "random:" (a policy URI) would read as {random: None}
            if isinstance(value, dict) and not raw.strip().startswith("{"):
                value = raw.strip()
            out[key.strip()] = value
        except yaml.YAMLError as err:
            rest = list(itertools.takewhile(lambda s: "=" not in s, items[i + 1:]))
            if rest:  # the shell split a value at its spaces
                joined = " ".join([item, *rest])
                raise ConfigError(f"override {item!r} is cut short: a value with spaces reached "
                                  f"the program as several arguments; quote it for the shell: "
                                  f"'{joined}'") from err
            problem = str(err).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({problem}); "
                              "lists are written [a, b], mappings {k: v}") from err
    return out


def _apply(data: dict[str, Any], flat: dict[str, Any]) -> dict[str, Any]:
    """Set each dotted key of ``flat`` in a copy of ``data``; the value replaces what was there
    (a mapping-valued field given as an override is replaced whole, not merged)."""
    out = copy.deepcopy(data)
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check ``value`` against the type ``hint`` (int/float/bool/str, list, dict, Optional)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{name}: unsupported value {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a section (mapping), got {value!r}")
        return _build(hint, value, prefix=f"{name}.")
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name}: expected a list, got {value!r}; write {name}=[a, b]")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str = "", base: Any = None) -> T:
    """``cls`` from ``data``; keys it does not give keep ``base``'s values (a section's own
    defaults: what its field's factory makes), else the class defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key in getattr(cls, "REFUSED_KEYS", {}):  # a key this config does not take, and why
            raise ConfigError(f"config key '{prefix}{key}': {cls.REFUSED_KEYS[key]}")
        if key not in fields:
            moved = [name for name in fields if dataclasses.is_dataclass(hints[name])
                     and key in {f.name for f in dataclasses.fields(hints[name])}]
            if moved:  # a key that lives in a section: name it where it is
                raise ConfigError(
                    f"config key '{prefix}{key}' is in the {moved[0]}: section now; write "
                    f"{prefix}{moved[0]}.{key}=... (or {key}: under {moved[0]}: in YAML)")
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            raise ConfigError(
                f"unknown config key '{prefix}{key}'{hint} (valid keys: {', '.join(fields)})"
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data and dataclasses.is_dataclass(hints[name]) and isinstance(data[name], dict):
            # a section given in part keeps, for the rest, the defaults its config sets
            start = getattr(base, name) if base is not None else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            kwargs[name] = _build(hints[name], data[name], f"{prefix}{name}.", start)
        elif name in data:
            kwargs[name] = _coerce(data[name], hints[name], prefix + name)
        elif base is not None:
            kwargs[name] = copy.deepcopy(getattr(base, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"config key '{prefix}{name}' is required: {f.metadata.get('doc')}")
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Build ``cls`` from an optional YAML file plus ``key=value`` overrides, then validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass an existing YAML file")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {p} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys, got {loaded!r}")
        data = loaded
    return config_from_dict(cls, _apply(data, parse_overrides(list(overrides))))


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build ``cls`` from a mapping (nested sections as mappings), coerce types, validate."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} keys, got {data!r}")
    cfg = _build(cls, data)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (for saving it resolved next to the run's outputs)."""
    return dataclasses.asdict(cfg)


def describe_config(cls: type) -> list[tuple[str, str, str]]:
    """``[(dotted key, default, doc)]`` for every field, nested sections expanded."""
    rows: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows += [(f"{f.name}.{k}", d, doc) for k, d, doc in describe_config(hint)]
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        rows.append((f.name, default, f.metadata.get("doc", "")))
    return rows


def require(ok: bool, name: str, message: str) -> None:
    """Raise a :class:`ConfigError` naming ``name`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{name}: {message}")


def validate_section(section: Any, name: str) -> None:
    """Validate a nested section, its errors naming the key as a user writes it
    (``grpo.group_size: ...``)."""
    try:
        section.validate()
    except ConfigError as err:
        raise ConfigError(f"{name}.{err}") from None
