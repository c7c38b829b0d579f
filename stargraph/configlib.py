"""stargraph's front end of :mod:`shared.configlib`: typed dataclass configs (each field documented by
the string right below it), YAML presets with line numbers, ``--section.field`` flags, ``--set key=value``
overrides.

The machinery (sourced trees, merging, type checking, :func:`build`, ``--help`` from the docstrings)
is :mod:`shared.configlib`, re-exported here; so are its rules that ``{}`` in a YAML file changes nothing
and that a section given as null is an error. This module adds what is stargraph's own: PyYAML (values
of files, flags and ``--set`` are parsed as YAML), the ``--set`` origins (``--set sft.learning_rate``), the
``--help`` style (``a|b`` literals, ``default None``) and :func:`dump_yaml` for ``config.yaml``.
Errors are :class:`ConfigError`\\s naming the source (file and line, or the flag) and the field.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import yaml

from shared import configlib as _core
from shared.configlib import (  # noqa: F401  (re-exported: stargraph's modules and tests use them)
    ConfigError,
    Sourced,
    build,
    coerce,
    field_docs,
    merge,
    merge_dotted,
    set_path,
    strip,
    to_dict,
    wrap,
)


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping; every leaf becomes :class:`Sourced` with ``<path> line N`` (``{}`` is an empty subtree)."""
    return _core.load_yaml_file(path, yaml)


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
    """Raw tree of the ``--a.b`` flags and ``--set`` items that were given (``--set`` wins), as mathreason
    reads them (:func:`shared.configlib.command_line_tree`)."""
    return _core.command_line_tree(ns, yaml.safe_load)


def sets_tree(items: list[str]) -> dict:
    """Tree of ``--set a.b=value`` items (values parsed as YAML; later items win; a mapping value merges
    into its section, see :func:`shared.configlib.as_subtree`)."""
    tree: dict = {}
    for item in items:
        tree = _core.merge_override(tree, *parse_override(item))
    return tree
