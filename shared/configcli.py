"""Field documentation, argparse flags and the command-line grammar of both front ends.

Split from :mod:`shared.configlib` (which re-exports every name here lazily): :func:`field_docs` reads
the docstrings under dataclass fields, :func:`add_arguments` makes a ``--a.b VALUE`` flag per leaf field
(hidden flags for renamed fields, so an old flag gets the new name), and :data:`GRAMMAR`,
:func:`add_config_arguments` and :func:`command_line_tree` are the one grammar both CLIs share:
``--preset NAME``, ``--config FILE``, per-field flags, ``--set a.b=v`` (repeatable), ``--print-config``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import Any

from shared.configlib import (
    FLAG_DEST,
    _hints,
    _join,
    _section_type,
    flags_from_args,
    flags_tree,
    merge_override,
    parse_override,
    parse_value,
    renamed_fields,
    type_name,
)

__all__ = ["GRAMMAR", "add_arguments", "add_config_arguments", "command_line_tree", "default_repr", "field_docs", "field_help", "leaf_fields"]


# ====================================================================== documentation and argparse


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass: the string literal written right below each field, read from
    the class source with :mod:`ast` (base classes' fields included; whitespace collapsed)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue  # no source (built in a REPL or by make_dataclass)
        node = tree.body[0] if tree.body else None
        if not isinstance(node, ast.ClassDef):
            continue
        for a, b in zip(node.body, node.body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field, str]]:
    """``(dotted name, annotation, field, docstring)`` of every settable leaf field, in declaration order
    (nested dataclass sections are walked; ``prefix`` is prepended as ``prefix.name``)."""
    out = []
    hints = _hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        name = _join(prefix, f.name)
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            out.extend(leaf_fields(tp, name))
        else:
            out.append((name, tp, f, docs.get(f.name, "")))
    return out


def default_repr(f: dataclasses.Field, *, none: str = "null") -> str:
    """A field's default as shown in ``--help`` (``none``, i.e. ``null``, for None; ``required`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return none if f.default is None else repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "required"


def field_help(
    tp: Any, f: dataclasses.Field, doc: str, *, literal: Callable[[Any], str] = repr, none: str = "null"
) -> str:
    """``"<docstring> [<type>; default <default>]"``, escaped for argparse (``%`` doubled); ``literal`` and
    ``none`` as in :func:`type_name` and :func:`default_repr`."""
    typ, default = type_name(tp, literal=literal), default_repr(f, none=none)
    return f"{doc} [{typ}; default {default}]".strip().replace("%", "%%")


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    *,
    title: str | None = None,
    help_text: Callable[[Any, dataclasses.Field, str], str] = field_help,
) -> argparse._ArgumentGroup:
    """One ``--a.b V`` flag per leaf field of ``cls`` (its help is ``help_text(annotation, field, docstring)``,
    by default :func:`field_help`), in an argument group.

    The raw strings are collected by :func:`flags_from_args` and parsed/type-checked when the config is
    built, so a bad value is reported like any other config error. ``prefix`` puts the fields under a
    section (``--train.sft.learning_rate`` with ``prefix="train"``)."""
    group = parser.add_argument_group(title or f"{cls.__name__} fields")
    for name, tp, f, doc in leaf_fields(cls, prefix):
        group.add_argument(f"--{name}", dest=f"{FLAG_DEST}{name}", metavar="V", default=None, help=help_text(tp, f, doc))
    for old in _renamed_leaves(cls, prefix):  # hidden: given, they fail at build with the new name
        group.add_argument(f"--{old}", dest=f"{FLAG_DEST}{old}", metavar="V", default=None, help=argparse.SUPPRESS)
    return group


def _renamed_leaves(cls: type, prefix: str = "") -> list[str]:
    """Dotted old names of the renamed fields of ``cls`` and of its sections."""
    out = [_join(prefix, old) for old in renamed_fields(cls)]
    for f in dataclasses.fields(cls):
        sub = _section_type(cls, f.name) if f.init else None
        if sub is not None:
            out.extend(_renamed_leaves(sub, _join(prefix, f.name)))
    return out


# ====================================================================== the command-line grammar of both front ends

GRAMMAR = """\
config:   [--preset NAME] [--config FILE] [--a.b V ...] [--set a.b=v ...] [--print-config]
          layers, later ones winning: preset < --config FILE < per-field flags --a.b V < --set a.b=v
          (repeatable); values are YAML; --print-config prints the resolved config and runs nothing."""
"""The config grammar both front ends (``stargraph``, ``mathreason``) show in their ``--help``."""


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    presets: Iterable[str],
    default_preset: str | None = None,
    preset_note: str = "",
    print_config: bool = True,
) -> None:
    """The shared config options of a command: ``--preset NAME``, ``--config FILE``, ``--set a.b=v``
    (repeatable) and ``--print-config`` (see :data:`GRAMMAR`); the per-field flags are :func:`add_arguments`'s."""
    default = f"; default {default_preset}" if default_preset else ""
    parser.add_argument("--preset", default=default_preset, metavar="NAME", help=f"packaged preset ({', '.join(presets)}){default}{preset_note}")
    parser.add_argument("--config", default=None, metavar="FILE", help="YAML config file applied over the preset")
    parser.add_argument(
        "--set", action="append", default=[], metavar="a.b=v",
        help="override any field, e.g. --set sft.learning_rate=3e-4 (repeatable; values are YAML; wins over the flags)",
    )
    if print_config:
        parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit (runs nothing)")


def command_line_tree(ns: argparse.Namespace, value_parser: Callable[[str], Any] = parse_value) -> dict:
    """Tree of the per-field flags (origins ``--a.b``) and the ``--set a.b=v`` items (origins ``--set a.b``)
    given on the command line; ``--set`` wins, later items win (a mapping value merges, see :func:`as_subtree`)."""
    tree = flags_tree(flags_from_args(ns), value_parser)
    for item in getattr(ns, "set", None) or []:
        key = item.partition("=")[0].strip()
        tree = merge_override(tree, *parse_override(item, value_parser, label="--set", origin=f"--set {key}"))
    return tree
