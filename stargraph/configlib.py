"""Typed dataclass configs: field docstrings, YAML presets with line numbers, CLI flags, overrides.

A config is a (possibly nested) dataclass whose fields carry a docstring written right below them::

    @dataclass
    class SFTConfig:
        lr: float = 1e-3
        "Peak learning rate of AdamW."

:func:`field_docs` reads those strings (with :mod:`ast`), :func:`add_dataclass_args` turns every
leaf field into a ``--section.field`` flag whose help is the docstring, and :func:`build` makes a
config from layered dicts (preset < config file < ``--set``/flags), checking every value against its
annotation.  Errors name the source (file and line, or the flag) and the field.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml


class ConfigError(ValueError):
    """A bad config value; the message names the source, line and field."""


@dataclasses.dataclass
class Sourced:
    """A raw value with where it came from (``file:line`` or ``--flag``)."""

    value: Any
    origin: str


# ---------------------------------------------------------------- docstrings


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` for a dataclass, from the string literal below each field (and bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        tree = ast.parse(src)
        node = tree.body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        body = node.body
        for a, b in zip(body, body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


# ---------------------------------------------------------------- YAML with line numbers


def load_yaml(path: str | Path) -> dict:
    """Load a YAML mapping; every leaf becomes :class:`Sourced` with ``file:line``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from e
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path} line {node.start_mark.line + 1}: the top level must be a mapping")
    return _from_node(node, str(path))


def _from_node(node: yaml.Node, fname: str) -> Any:
    origin = f"{fname} line {node.start_mark.line + 1}"
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for k, v in node.value:
            key = str(k.value)  # keys are plain scalars
            if isinstance(v, yaml.MappingNode):
                out[key] = _from_node(v, fname)
            else:
                out[key] = Sourced(_construct(v), f"{fname} line {v.start_mark.line + 1}")
        return out
    return Sourced(_construct(node), origin)


def _construct(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_override(item: str, origin: str = "--set") -> tuple[list[str], Sourced]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"{origin} {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{origin} {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{origin} {item!r}: cannot parse value: {e}") from e
    return key.split("."), Sourced(value, f"{origin} {key}")


def set_path(tree: dict, path: list[str], value: Sourced) -> None:
    node = tree
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[path[-1]] = value


def merge(base: dict, over: dict) -> dict:
    """Recursive merge of raw config trees (``over`` wins)."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def strip(tree: Any) -> Any:
    """Raw tree without :class:`Sourced` wrappers."""
    if isinstance(tree, dict):
        return {k: strip(v) for k, v in tree.items()}
    if isinstance(tree, Sourced):
        return tree.value
    return tree


def wrap(tree: Any, origin: str) -> Any:
    """Plain dict -> raw tree whose leaves are :class:`Sourced` with ``origin``."""
    if isinstance(tree, dict):
        return {k: wrap(v, origin) for k, v in tree.items()}
    return Sourced(tree, origin)


# ---------------------------------------------------------------- building typed configs


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotation ``tp``; raise :class:`ConfigError` naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)  # YAML 1.1 reads "1e-3" as a string
                except ValueError:
                    pass
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return build(tp, wrap(value, where))
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def build(cls: type, raw: dict | None, prefix: str = ""):
    """Instantiate dataclass ``cls`` from a raw tree (leaves :class:`Sourced`); defaults fill gaps.

    Unknown keys and ill-typed values raise :class:`ConfigError` naming the source and field.
    Dataclass ``__post_init__`` errors are re-raised with the same context.
    """
    raw = raw or {}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, val in raw.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            origin = val.origin if isinstance(val, Sourced) else _first_origin(val)
            raise ConfigError(
                f"{origin}: unknown field {dotted!r} for {cls.__name__}; known: {', '.join(sorted(fields))}"
            )
        tp = hints[key]
        if isinstance(val, dict) and dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, val, dotted)
        elif isinstance(val, dict):
            # a dict-typed field given as a nested mapping
            kwargs[key] = coerce(strip(val), tp, f"{_first_origin(val)}: field {dotted}")
        else:
            kwargs[key] = coerce(val.value, tp, f"{val.origin}: field {dotted}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        origin = _first_origin(raw) if raw else "defaults"
        raise ConfigError(f"{origin}: invalid {cls.__name__} {prefix or ''}: {e}") from e


def _first_origin(tree: Any) -> str:
    if isinstance(tree, Sourced):
        return tree.origin
    if isinstance(tree, dict):
        for v in tree.values():
            o = _first_origin(v)
            if o:
                return o
    return "config"


def to_dict(cfg: Any) -> Any:
    """Plain nested dict (for YAML/JSON)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------- argparse


def _leaf_fields(cls: type, prefix: str = ""):
    hints = _hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _leaf_fields(tp, name + ".")
        else:
            yield name, tp, f, docs.get(f.name, "")


def _default_repr(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(f.default_factory())  # type: ignore[misc]
    return "required"


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One ``--a.b`` flag per leaf field of ``cls``; values are parsed as YAML and type-checked later."""
    group = parser.add_argument_group(title or f"{cls.__name__} fields (any of them also as --set key=value)")
    for name, tp, f, doc in _leaf_fields(cls):
        typ = _type_name(tp)
        help_ = f"{doc} [{typ}; default {_default_repr(f)}]".replace("%", "%%")
        group.add_argument(f"--{name}", dest=f"cfg:{name}", metavar="V", default=None, help=help_)


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Raw tree of the ``--a.b`` flags and ``--set`` items that were given."""
    tree: dict = {}
    for key, raw in vars(ns).items():
        if key.startswith("cfg:") and raw is not None:
            path, val = parse_override(f"{key[4:]}={raw}", origin=f"--{key[4:]}")
            val.origin = f"--{key[4:]}"
            set_path(tree, path, val)
    for item in getattr(ns, "set", None) or []:
        path, val = parse_override(item)
        set_path(tree, path, val)
    return tree
