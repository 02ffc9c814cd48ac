"""Loads a Config from YAML and `--set key=value` overrides, validating every key, type and range."""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from pathlib import Path

import yaml

from configs.schema import Config, Table

CONFIG_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


def resolve_path(name: str | os.PathLike) -> Path:
    """A file, or the name of a packaged config ('small' means configs/small.yaml).

    Only a file is taken for a path: a folder that happens to share a packaged config's name in
    the current directory (say `./dupn`) does not hide configs/dupn.yaml.
    """
    path = Path(name)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{name}.yaml"
    if packaged.exists():
        return packaged
    raise ConfigError(f"{name}: no such configuration file (nor configs/{name}.yaml)")


def load_config(name: str | os.PathLike = "dupn", overrides: typing.Sequence[str] = ()) -> Config:
    """Reads a YAML file into a validated Config, then applies `key=value` overrides."""
    path = resolve_path(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    config = from_dict(raw, source=str(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item}: expected key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item}: not valid YAML: {err}".replace("\n", " ")) from None
        _set_nested(raw, key.strip().split("."), parsed, source=f"--set {item}")
        # Checked after each override, so an error names the --set that caused it, not the file.
        config = from_dict(raw, source=f"{path} with --set {item}")
    return config


def from_dict(raw: dict, source: str = "<dict>") -> Config:
    config = _build(Config, raw, prefix="", source=source)
    _check_heads(config, source)
    _check_embeddings(config, source)
    return config


def _check_embeddings(config: Config, source: str) -> None:
    """A qr table splits its buckets into two tables of at least 2 rows; dupn-w2v pre-trains a
    plain item table."""
    for table in dataclasses.fields(config.features):
        value = getattr(config.features, table.name)
        if not isinstance(value, Table) or value.embedding != "qr":
            continue
        if value.buckets < 4:
            raise ConfigError(f"{source}: features.{table.name}.buckets: a qr embedding needs at "
                              f"least 4 buckets, got {value.buckets}")
        if table.name == "item_id" and config.model.variant == "dupn-w2v":
            raise ConfigError(f"{source}: features.item_id.embedding: dupn-w2v pre-trains a plain "
                              f"item table; qr is not possible with it")


def _check_heads(config: Config, source: str) -> None:
    """Heads are keyed by name (outputs, losses, metrics): two heads of one name would collide."""
    seen = {}
    for i, head in enumerate(config.model.heads):
        if head.name in seen:
            raise ConfigError(f"{source}: model.heads[{i}].name: '{head.name}' is already the name "
                              f"of model.heads[{seen[head.name]}]")
        seen[head.name] = i


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def dump_config(config: Config, directory: str | os.PathLike) -> Path:
    """Writes the resolved configuration beside a model directory, as config.yaml."""
    out = Path(directory) / "config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    return out


def add_config_args(parser: argparse.ArgumentParser, default: str = "dupn") -> None:
    parser.add_argument("--config", default=default,
                        help="YAML file, or the name of one in configs/ (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set model.lstm_units=64 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def _set_nested(raw: dict, keys: list[str], value, source: str) -> None:
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {key} is not a section")
    node[keys[-1]] = value


def _build(cls, raw, prefix: str, source: str, base=None):
    """An instance of dataclass cls from a mapping; keys left out keep their value in `base`
    (the field's own default, e.g. item_id's dim 32, not the Table class default)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, "
                          f"got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{prefix}{unknown[0]}' "
                          f"(known: {', '.join(sorted(fields))})")
    base = cls() if base is None else base
    values = {}
    for name, value in raw.items():
        values[name] = _convert(hints[name], value, fields[name].metadata, f"{prefix}{name}", source,
                                base=getattr(base, name))
    return dataclasses.replace(base, **values)


def _convert(hint, value, meta, key: str, source: str, base=None):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.", source=source, base=base)
    origin = typing.get_origin(hint)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(item_hint, v, {}, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and isinstance(value, str):
        try:   # YAML 1.1 reads 1e-6 (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool) or hint is not bool and (
            isinstance(value, bool) or not isinstance(value, hint)):
        raise ConfigError(f"{source}: {key}: expected {hint.__name__}, "
                          f"got {type(value).__name__} {value!r}")
    if hint is float and not math.isfinite(value):   # NaN would pass every min/max check
        raise ConfigError(f"{source}: {key}: expected a finite number, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{source}: {key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{source}: {key}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{source}: {key}: {value!r} is above the maximum {meta['max']}")
    return value
