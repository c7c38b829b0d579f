"""stargraph's front end of :mod:`shared.configlib`: typed dataclass configs (each field documented by
the string right below it), YAML presets with line numbers, ``--section.field`` flags, ``--set key=value``
overrides.

The machinery (sourced trees, merging, type checking, :func:`build`, ``--help`` from the docstrings)
is :mod:`shared.configlib`, re-exported here. This module adds what is stargraph's own: PyYAML (values
of files, flags and ``--set`` are parsed as YAML), the ``--set`` origins (``--set sft.lr``), the
``--help`` style (``a|b`` literals, ``default None``) and :func:`dump_yaml` for ``config.yaml``.
Errors are :class:`ConfigError`\\s naming the source (file and line, or the flag) and the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from shared import configlib as _core
from shared.configlib import (  # noqa: F401  (re-exported: stargraph's modules and tests use them)
    ConfigError,
    Sourced,
    coerce,
    field_docs,
    merge,
    set_path,
    strip,
    to_dict,
    wrap,
)


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping; every leaf becomes :class:`Sourced` with ``<path> line N``.

    An empty mapping (``{}``) is an empty subtree, not a leaf: it merges as "nothing to change" and
    builds a section's defaults."""
    return _empty_mappings_as_trees(_core.load_yaml_file(path, yaml))


def _empty_mappings_as_trees(tree: dict) -> dict:
    out: dict = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out[k] = _empty_mappings_as_trees(v)
        elif isinstance(v, Sourced) and isinstance(v.value, dict) and not v.value:
            out[k] = {}
        else:
            out[k] = v
    return out


def build(cls: type, tree: Mapping | None = None) -> Any:
    """:func:`shared.configlib.build`, except that a section given as null (``sft:`` with nothing under it)
    is an error, as it always was in stargraph, rather than a silent reset of the preset's section to the
    dataclass defaults."""
    _reject_null_sections(cls, tree or {}, "")
    return _core.build(cls, tree)


def _reject_null_sections(cls: type, tree: Mapping, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    for key, val in tree.items():
        tp, name = hints.get(key), f"{prefix}.{key}" if prefix else str(key)
        if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
            continue
        if isinstance(val, Sourced) and val.value is None:
            raise ConfigError(f"{val.origin}: field {name}: expected a mapping of {tp.__name__} fields, got None")
        if isinstance(val, Sourced) and isinstance(val.value, Mapping):
            val = wrap(val.value, val.origin)
        if isinstance(val, Mapping):
            _reject_null_sections(tp, val, name)


def parse_override(item: str, origin: str = "--set") -> tuple[list[str], Sourced]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML, from ``<origin> a.b``)."""
    key = item.partition("=")[0].strip()
    return _core.parse_override(item, yaml.safe_load, label=origin, origin=f"{origin} {key}")


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------- argparse

_field_help = functools.partial(_core.field_help, literal=str, none="None")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One ``--a.b`` flag per leaf field of ``cls``; values are parsed as YAML and type-checked later."""
    title = title or f"{cls.__name__} fields (any of them also as --set key=value)"
    _core.add_arguments(parser, cls, title=title, help_text=_field_help)


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Raw tree of the ``--a.b`` flags and ``--set`` items that were given (``--set`` wins)."""
    flags = _core.flags_tree(_core.flags_from_args(ns), yaml.safe_load)
    sets: dict = {}
    for item in getattr(ns, "set", None) or []:
        set_path(sets, *parse_override(item))
    return merge(flags, sets)
