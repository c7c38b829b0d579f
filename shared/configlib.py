"""Typed dataclass configs: sourced values, layered trees, coercion, overrides, ``--help`` from docstrings.

A config is a (possibly nested) dataclass whose fields carry a docstring written right below them::

    @dataclass
    class SFTConfig:
        learning_rate: float = 1e-3
        "Peak learning rate of AdamW."

How a front end uses this module:

1. Read each layer (preset, config file, command line) into a *tree*: nested ``dict``s whose leaves are
   :class:`Sourced` values, each knowing where it came from (``my.yaml line 3``, ``--sft.learning_rate``,
   ``--set sft.learning_rate``). YAML files go through :func:`parse_yaml_sourced` (the front end passes its
   ``yaml`` module; this module never imports it), ``a.b=value`` items through :func:`overrides_tree`,
   ``--a.b VALUE`` flags (made by :func:`add_arguments`) through :func:`flags_tree`.
2. :func:`merge` the layers, later ones winning (preset < config file < overrides).
3. :func:`build` the dataclass: every value is checked against its annotation (:func:`coerce`), unknown
   fields are rejected with a close-match hint, ``__post_init__`` errors get the section's origin, and
   ``validate()`` methods (cross-field rules, reported with :class:`FieldError`/:func:`require`) run once
   the whole tree is built. Every error is a :class:`ConfigError` naming the source and the field.
4. :func:`to_dict` gives the resolved config as plain data for dumping.

Renamed fields: a dataclass decorated with :func:`renamed` (``@renamed(lr="learning_rate")``) rejects its
old names wherever a value can come from (a file, an override, a ``--sft.lr`` flag) with a
:class:`ConfigError` that names the origin and the new name. :func:`renamed_path` checks a dotted name
kept as data (a sweep variant's keys), :func:`upgrade_names` reads a run folder's own record written
before a rename, and ``to_dict(cfg, old_names=True)`` spells renamed fields the old way (for hashes
that must not change with a rename).

Both front ends share one command-line grammar (:data:`GRAMMAR`, :func:`add_config_arguments`,
:func:`command_line_tree`): ``--preset NAME``, ``--config FILE``, per-field flags ``--a.b V``,
``--set a.b=v`` (repeatable) and ``--print-config``.

Two rules keep a layer from silently resetting a section of an earlier one (a preset's ``sft:``, say):
an empty mapping in a YAML file (``sft: {}``) is an empty subtree, so it merges as "nothing to change";
a dataclass-typed section given as null (``sft:`` with nothing under it) is an error, not the defaults.
Overrides follow the same rules: a mapping value (``--set sft={learning_rate: 1}``) merges into the section like
the same mapping in a file would (see :func:`as_subtree`), and ``--set sft={}`` changes nothing.

Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union

__all__ = [
    "ConfigError",
    "FieldError",
    "Sourced",
    "FLAG_DEST",
    "GRAMMAR",  # noqa: F822 - shared.configcli, via __getattr__
    "add_arguments",  # noqa: F822 - shared.configcli, via __getattr__
    "add_config_arguments",  # noqa: F822 - shared.configcli, via __getattr__
    "build",
    "coerce",
    "default_repr",  # noqa: F822 - shared.configcli, via __getattr__
    "field_docs",  # noqa: F822 - shared.configcli, via __getattr__
    "field_help",  # noqa: F822 - shared.configcli, via __getattr__
    "as_subtree",
    "command_line_tree",  # noqa: F822 - shared.configcli, via __getattr__
    "first_origin",
    "flags_from_args",
    "flags_tree",
    "inherit",
    "leaf_fields",  # noqa: F822 - shared.configcli, via __getattr__
    "load_yaml_file",  # noqa: F822 - shared.configyaml, via __getattr__
    "merge",
    "merge_dotted",
    "merge_override",
    "old_path",
    "overrides_tree",
    "parse_override",
    "parse_value",
    "parse_yaml_sourced",  # noqa: F822
    "renamed",
    "renamed_fields",
    "renamed_path",
    "require",
    "set_path",
    "sourced_tree_from_nodes",  # noqa: F822
    "strip",
    "to_dict",
    "type_name",
    "upgrade_names",
    "validate",
    "wrap",
]

FLAG_DEST = "cfg:"
"""Prefix of the argparse ``dest`` of the per-field flags made by :func:`add_arguments`."""


class ConfigError(ValueError):
    """A bad config value or file; the message names the source (file and line, flag or override) and the field."""


class FieldError(ValueError):
    """Raised by a config's ``validate()`` (or ``__post_init__``) about one of its fields (a name relative to
    the section, dotted for a child section's field); :func:`build` adds where the value came from."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name = field_name


def require(cond: bool, field_name: str, message: str) -> None:
    """Raise :class:`FieldError` about ``field_name`` unless ``cond``."""
    if not cond:
        raise FieldError(field_name, message)


@dataclasses.dataclass
class Sourced:
    """A raw config value and where it came from (``file line N``, ``--flag``, ``override a.b=v``)."""

    value: Any
    origin: str


# ====================================================================== renamed fields

_RENAMED = "__config_renamed__"


def renamed(**old_to_new: str) -> Callable[[type], type]:
    """Class decorator of a config dataclass whose fields were renamed (``@renamed(lr="learning_rate")``).

    An old name, wherever it is written (a YAML file, an override, a ``--sec.old`` flag: :func:`add_arguments`
    adds hidden ones), is a :class:`ConfigError` that names the origin and the new name (``my.yaml line 3:
    field 'sft.lr' was renamed to 'sft.learning_rate'``). Put it above ``@dataclass``; a subclass inherits
    its bases' renames."""

    def deco(cls: type) -> type:
        setattr(cls, _RENAMED, {**getattr(cls, _RENAMED, {}), **old_to_new})
        return cls

    return deco


def renamed_fields(cls: type) -> dict[str, str]:
    """``{old name: new name}`` of a config dataclass (see :func:`renamed`); empty when nothing was renamed."""
    return dict(getattr(cls, _RENAMED, {}))


def _section_type(cls: type, name: str) -> type | None:
    tp = _hints(cls).get(name)
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


def renamed_path(cls: type, dotted: str) -> str | None:
    """The current spelling of a dotted field name of ``cls`` that uses an old (renamed) name anywhere along
    the path (``sft.lr`` -> ``sft.learning_rate``); None when no part of it is an old name (an unknown
    name is left to :func:`build`). For dotted names kept as data, e.g. a sweep variant's keys."""
    parts = dotted.split(".")
    out: list[str] = []
    node: type | None = cls
    changed = False
    for i, p in enumerate(parts):
        if node is None:
            out.extend(parts[i:])
            break
        names = {f.name for f in dataclasses.fields(node)}
        new = renamed_fields(node).get(p)
        if p not in names and new is not None:
            p, changed = new, True
        out.append(p)
        node = _section_type(node, p)
    return ".".join(out) if changed else None


def _old_names(cls: type) -> dict[str, str]:
    return {new: old for old, new in renamed_fields(cls).items()}


def old_path(cls: type, dotted: str) -> str:
    """A dotted field name of ``cls`` with every renamed part spelled the old way (``sft.learning_rate`` ->
    ``sft.lr``): for a name that must hash as it did before the rename (a sweep variant's folder tag)."""
    out: list[str] = []
    node: type | None = cls
    for p in dotted.split("."):
        out.append(_old_names(node).get(p, p) if node is not None else p)
        node = _section_type(node, p) if node is not None else None
    return ".".join(out)


def upgrade_names(cls: type, tree: Any) -> Any:
    """A tree (or plain data) of ``cls`` with every old (renamed) field name replaced by the new one.

    Only for reading back a run folder's own record (``config.yaml``) written before a rename; a config
    that a person writes must use the new names (:func:`build` rejects old ones with a hint)."""
    if not isinstance(tree, Mapping) or not tree:
        return tree
    names = {f.name for f in dataclasses.fields(cls)}
    table = renamed_fields(cls)
    out: dict = {}
    for k, v in tree.items():
        key = table.get(k, k) if k not in names and table.get(k) not in tree else k
        sub = _section_type(cls, key) if key in names else None
        out[key] = upgrade_names(sub, v) if sub is not None else v
    return out


# ====================================================================== trees


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _EmptyTree(dict):
    """An empty mapping (``{}``) read from a file: an empty subtree ("nothing to change") that remembers
    where it was written, so that an error about it (an unknown field) names the file and line."""

    def __init__(self, origin: str):
        super().__init__()
        self.origin = origin


def wrap(tree: Any, origin: str) -> Any:
    """Plain data -> tree whose leaves are :class:`Sourced` with ``origin`` (existing ``Sourced`` kept)."""
    if isinstance(tree, _EmptyTree) and not tree:
        return _EmptyTree(tree.origin)
    if isinstance(tree, Mapping):
        return {k: wrap(v, origin) for k, v in tree.items()}
    if isinstance(tree, Sourced):
        return tree
    return Sourced(tree, origin)


def strip(tree: Any) -> Any:
    """Tree -> plain data (the :class:`Sourced` wrappers removed)."""
    if isinstance(tree, Mapping):
        return {k: strip(v) for k, v in tree.items()}
    if isinstance(tree, Sourced):
        return tree.value
    return tree


def first_origin(tree: Any) -> str | None:
    """Origin of the first leaf of a tree (of an empty subtree read from a file: where it was written;
    None when it has none)."""
    if isinstance(tree, Sourced):
        return tree.origin
    if isinstance(tree, Mapping):
        for v in tree.values():
            o = first_origin(v)
            if o:
                return o
        if isinstance(tree, _EmptyTree):
            return tree.origin
    return None


def set_path(tree: dict, path: list[str], value: Any) -> None:
    """``tree[path[0]][path[1]]... = value`` in place, creating (or replacing leaves by) dicts on the way."""
    node = tree
    for p in path[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            node[p] = nxt
        node = nxt
    node[path[-1]] = value


def merge(*trees: Mapping) -> dict:
    """Deep merge of trees, later ones winning (preset < config file < overrides). Returns a new tree and
    never shares a dict with its inputs, so the result can be edited with :func:`set_path`."""
    out: dict = {}
    for tree in trees:
        for k, v in tree.items():
            prev = out.get(k)
            if isinstance(v, _EmptyTree) and not v and not (isinstance(prev, dict) and prev):
                out[k] = _EmptyTree(v.origin)  # `{}` from a file over nothing (or a leaf): keep its origin
            elif isinstance(v, Mapping):
                out[k] = merge(prev, v) if isinstance(prev, dict) else merge(v)
            else:
                out[k] = v
    return out


def inherit(
    tree: Mapping,
    key: str,
    load: Callable[[str, tuple[str, ...]], dict],
    chain: tuple[str, ...] = (),
    *,
    max_depth: int = 16,
) -> dict:
    """Resolve a ``key: <parent>`` entry (e.g. ``preset: gsm8k``): the parent's tree, loaded with
    ``load(name, chain + (name,))``, goes underneath ``tree`` (which wins). ``chain`` holds the names already
    being loaded; naming one of them again (or a chain longer than ``max_depth``, e.g. a cycle through
    differently spelled paths) is a :class:`ConfigError`."""
    tree = dict(tree)
    parent = tree.pop(key, None)
    if parent is None:
        return tree
    if not isinstance(parent, Sourced) or not isinstance(parent.value, str) or not parent.value.strip():
        origin = parent.origin if isinstance(parent, Sourced) else first_origin(parent) or "config"
        raise ConfigError(f"{origin}: field {key!r} must be a preset name")
    name = parent.value
    if name in chain:
        raise ConfigError(f"{parent.origin}: {key} cycle: {' -> '.join((*chain, name))}")
    if len(chain) >= max_depth:
        raise ConfigError(f"{parent.origin}: {key} chain too deep (a cycle?): {' -> '.join((*chain, name))}")
    return merge(load(name, (*chain, name)), tree)


# ====================================================================== overrides and flags


def parse_value(raw: str) -> Any:
    """Default value parser of overrides: JSON if it parses (numbers, true/false/null, lists, objects,
    quoted strings), else the raw string. Front ends with PyYAML pass ``yaml.safe_load`` instead."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def parse_override(
    item: str, value_parser: Callable[[str], Any] = parse_value, *, label: str = "override", origin: str | None = None
) -> tuple[list[str], Sourced]:
    """``"a.b=value"`` -> (``["a", "b"]``, :class:`Sourced` value). An empty value is ``""``.

    ``label`` names the kind of item in errors and in the default origin (``override a.b=value``;
    ``--set`` for stargraph's ``--set a.b=value``); ``origin`` replaces that default origin."""
    if "=" not in item:
        raise ConfigError(f"{label} {item!r}: expected section.field=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{label} {item!r}: bad field name {key!r}")
    value: Any = ""
    if raw.strip():
        try:
            value = value_parser(raw)
        except Exception as e:  # a parser's own error type (yaml.YAMLError is no ValueError)
            raise ConfigError(f"{label} {item!r}: cannot parse the value ({e})") from e
    return parts, Sourced(value, origin or f"{label} {key}={raw}")


def as_subtree(val: Sourced) -> Any:
    """An override's value as it enters the merge: a mapping becomes a subtree (its leaves keep the
    override's origin), so ``sft={learning_rate: 1}`` changes ``sft.learning_rate`` and leaves the section's other fields as the
    preset/file set them, exactly as the same mapping written in a YAML file would; ``{}`` changes nothing
    (as in a file). Any other value (a list, a scalar, null) replaces what was there."""
    if isinstance(val.value, Mapping):
        return wrap(val.value, val.origin) if val.value else _EmptyTree(val.origin)
    return val


def overrides_tree(
    items: Iterable[str], value_parser: Callable[[str], Any] = parse_value, *, label: str = "override"
) -> dict:
    """Tree of ``a.b=value`` items (later items win; a mapping value merges, see :func:`as_subtree`)."""
    tree: dict = {}
    for item in items:
        path, val = parse_override(item, value_parser, label=label)
        tree = merge_override(tree, path, val)
    return tree


def merge_override(tree: Mapping, path: list[str], val: Sourced) -> dict:
    """``tree`` with the override ``path = val`` merged in (a new tree; a mapping value merges, see
    :func:`as_subtree`). Use this, not :func:`set_path`, for anything a user wrote as ``a.b=value``."""
    node: Any = as_subtree(val)
    for p in reversed(path):
        node = {p: node}
    return merge(tree, node)


def merge_dotted(tree: Mapping, values: Mapping[str, Any], origin: str) -> dict:
    """``tree`` with ``{"a.b": value, ...}`` merged in as overrides (see :func:`merge_override`), each
    from ``f"{origin}{key}"`` (a sweep variant's or a reproduce arm's ``set:`` mapping)."""
    out = dict(tree)
    for k, v in values.items():
        out = merge_override(out, k.split("."), Sourced(v, f"{origin}{k}"))
    return out


def flags_tree(flags: Mapping[str, Any], value_parser: Callable[[str], Any] = parse_value) -> dict:
    """Tree of ``{"a.b": raw}`` per-field flags (see :func:`flags_from_args`); origins read ``--a.b``."""
    tree: dict = {}
    for name, raw in flags.items():
        value: Any = raw
        if isinstance(raw, str):
            value = ""
            if raw.strip():
                try:
                    value = value_parser(raw)
                except Exception as e:
                    raise ConfigError(f"--{name} {raw!r}: cannot parse the value ({e})") from e
        tree = merge_override(tree, name.split("."), Sourced(value, f"--{name}"))
    return tree


def flags_from_args(ns: argparse.Namespace) -> dict[str, str]:
    """``{"a.b": raw}`` of the :func:`add_arguments` flags that were given on the command line."""
    return {k[len(FLAG_DEST):]: v for k, v in vars(ns).items() if k.startswith(FLAG_DEST) and v is not None}


# ====================================================================== coercion


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(tp: Any, *, literal: Callable[[Any], str] = repr) -> str:
    """Short, YAML-flavoured name of an annotation: ``int``, ``str or null``, ``list[str]``, ``'a'|'b'``.

    ``literal`` writes each ``Literal`` value (``str`` gives ``a|b``, as stargraph's ``--help`` shows them)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "|".join(literal(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else type_name(a, literal=literal) for a in args)
    if origin in (list, tuple, dict) and args:
        inner = ("..." if a is Ellipsis else type_name(a, literal=literal) for a in args)
        return f"{origin.__name__}[{', '.join(inner)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _at(origin: str, name: str) -> str:
    return f"{origin}: field {name}" if name else origin


def coerce(value: Any, annotation: Any, where: str = "value") -> Any:
    """Check ``value`` against ``annotation`` and convert it; a :class:`ConfigError` starts with ``where``.

    Supported: ``Any``/``object``; ``X | None`` and other unions (first member that accepts the value);
    ``Literal[...]`` (type and value must match); ``list[X]``; ``tuple[X, ...]`` and ``tuple[A, B]``;
    ``dict[K, V]`` (keys become strings); ``bool`` (true/false only); ``int`` (also a float with an integral
    value); ``float`` (also an int, and a numeric string: YAML 1.1 reads ``1e-5`` as a string); ``str``;
    nested dataclasses (from a mapping, see :func:`build`); any other class by ``isinstance``.
    """
    return _coerce(value, annotation, where, "")


def _coerce(value: Any, tp: Any, origin: str, name: str) -> Any:
    where = _at(origin, name)
    torigin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if torigin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        last: ConfigError | None = None
        for a in members:
            try:
                return _coerce(value, a, origin, name)
            except ConfigError as e:
                last = e
        if len(members) == 1 and last is not None and not _is_scalar(members[0]):
            raise last  # `list[int] | None`: the element-level error is the useful one
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if torigin is Literal:
        if any(type(value) is type(a) and value == a for a in args):
            return value
        raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
    if torigin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if torigin is tuple or tp is tuple:
            if args and not (len(args) == 2 and args[1] is Ellipsis):
                if len(value) != len(args):
                    raise ConfigError(f"{where}: expected a list of {len(args)} items, got {value!r}")
                return tuple(_coerce(v, a, origin, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
            inner = args[0] if args else Any
            return tuple(_coerce(v, inner, origin, f"{name}[{i}]") for i, v in enumerate(value))
        inner = args[0] if args else Any
        return [_coerce(v, inner, origin, f"{name}[{i}]") for i, v in enumerate(value)]
    if torigin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, origin, _join(name, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, wrap(value, origin), prefix=name)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {value!r}")
    raise ConfigError(f"{where}: unsupported annotation {tp!r}")


def _is_scalar(tp: Any) -> bool:
    return tp in (bool, int, float, str) or typing.get_origin(tp) is Literal


# ====================================================================== building


def build(cls: type, tree: Mapping | None = None, *, prefix: str = "", origins: dict[str, str] | None = None) -> Any:
    """Instantiate dataclass ``cls`` from a tree (leaves :class:`Sourced`; plain values count as from
    ``config``); defaults fill the gaps. Then run :func:`validate`.

    Errors (:class:`ConfigError`) name the origin and the dotted field: an unknown field (with a
    "did you mean" hint), an ill-typed value, a missing required field, an error raised by a
    ``__post_init__`` (a :class:`FieldError` names its field's origin) or by a ``validate()``.
    A dataclass-typed section given as null is an error (not a silent reset of an earlier layer's section
    to the defaults); given as an empty mapping, it keeps its default. Only fields annotated with a
    dataclass are sections: for ``X | None`` null is None, and for ``dict[...]`` ``{}`` is an empty dict.

    Args:
        prefix: dotted name of ``cls``'s section in a larger config (used in messages).
        origins: filled with ``{dotted field: origin}`` of every value that was given.
    """
    origins = {} if origins is None else origins
    obj = _build(cls, wrap(tree or {}, "config"), prefix, origins)
    validate(obj, origins, prefix)
    return obj


def _build(cls: type, tree: Mapping, prefix: str, origins: dict[str, str]) -> Any:
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"build() needs a dataclass type, got {cls!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, val in tree.items():
        dotted = _join(prefix, str(key))
        if key not in fields:
            origin = first_origin(val) or "config"
            new_name = renamed_fields(cls).get(str(key))
            if new_name is not None:
                raise ConfigError(f"{origin}: field {dotted!r} was renamed to {_join(prefix, new_name)!r}")
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean {_join(prefix, close[0])!r}?" if close else f"; known: {', '.join(sorted(fields))}"
            raise ConfigError(f"{origin}: unknown field {dotted!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if isinstance(val, Sourced):
                v = val.value
                if v is None:  # `section:` with nothing under it, or `section=null`
                    raise ConfigError(f"{val.origin}: field {dotted}: expected a mapping of {tp.__name__} fields, got None")
                if isinstance(v, Mapping) and not v:
                    continue  # `section={}` as one value (an override): the default
                if isinstance(v, tp):
                    kwargs[key] = v
                    origins[dotted] = val.origin
                elif isinstance(v, Mapping):
                    kwargs[key] = _build(tp, wrap(v, val.origin), dotted, origins)
                else:
                    raise ConfigError(f"{val.origin}: field {dotted}: expected a mapping of {tp.__name__} fields, got {v!r}")
            elif val:
                kwargs[key] = _build(tp, val, dotted, origins)
            # an empty subtree (`section: {}` in a YAML file) keeps the field's default
        elif isinstance(val, Mapping):  # a dict-typed field written as a nested mapping
            origin = first_origin(val) or "config"
            kwargs[key] = _coerce(strip(val), tp, origin, dotted)
            origins[dotted] = origin
        else:
            kwargs[key] = _coerce(val.value, tp, val.origin, dotted)
            origins[dotted] = val.origin
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        where = first_origin(tree) or "config"
        raise ConfigError(f"{where}: field {_join(prefix, missing[0])}: required (it has no default)")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except FieldError as e:
        raise ConfigError(_field_error(e, prefix, origins)) from None
    except (TypeError, ValueError) as e:
        where = first_origin(tree) or "defaults"
        raise ConfigError(f"{where}: invalid {cls.__name__} (section {prefix or 'top level'}): {e}") from e


def _field_error(e: FieldError, prefix: str, origins: Mapping[str, str]) -> str:
    name = _join(prefix, e.field_name)
    return f"{origins.get(name, 'default value')}: field {name}: {e}"


def validate(cfg: Any, origins: Mapping[str, str] | None = None, prefix: str = "") -> None:
    """Run the ``validate()`` method of every section of ``cfg`` that has one (children first, so rules may
    rely on valid children). A :class:`FieldError` becomes a :class:`ConfigError` naming the field and the
    origin of its value (from ``origins``, as filled by :func:`build`; else ``default value``)."""
    origins = origins or {}
    hints = _hints(type(cfg))
    for f in dataclasses.fields(cfg):
        sub = getattr(cfg, f.name)
        if dataclasses.is_dataclass(hints.get(f.name)) and dataclasses.is_dataclass(sub) and not isinstance(sub, type):
            validate(sub, origins, _join(prefix, f.name))
    check = getattr(cfg, "validate", None)
    if not callable(check):
        return
    try:
        check()
    except ConfigError:
        raise
    except FieldError as e:
        raise ConfigError(_field_error(e, prefix, origins)) from None
    except (TypeError, ValueError) as e:
        where = next((o for k, o in origins.items() if not prefix or k.startswith(prefix + ".")), "defaults")
        raise ConfigError(f"{where}: invalid {type(cfg).__name__} (section {prefix or 'top level'}): {e}") from e


def to_dict(cfg: Any, *, old_names: bool = False) -> Any:
    """Plain nested data of a config (for YAML/JSON and hashing): dataclasses -> dicts, tuples -> lists.

    ``old_names``: renamed fields (see :func:`renamed`) under their old names, for a hash that must stay
    what it was before the rename (e.g. a stage key that decides whether existing outputs are reused)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        spell = _old_names(type(cfg)) if old_names else {}
        return {spell.get(f.name, f.name): to_dict(getattr(cfg, f.name), old_names=old_names) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v, old_names=old_names) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v, old_names=old_names) for k, v in cfg.items()}
    return cfg


_YAML_NAMES = frozenset({"load_yaml_file", "parse_yaml_sourced", "sourced_tree_from_nodes"})
_CLI_NAMES = frozenset({"field_docs", "leaf_fields", "default_repr", "field_help", "add_arguments", "GRAMMAR",
                        "add_config_arguments", "command_line_tree"})


def __getattr__(name: str) -> Any:
    """The YAML readers live in :mod:`shared.configyaml`, the field documentation, argparse flags and the
    command-line grammar in :mod:`shared.configcli` (each imported on first use: both import this module)."""
    if name in _YAML_NAMES:
        from shared import configyaml

        return getattr(configyaml, name)
    if name in _CLI_NAMES:
        from shared import configcli

        return getattr(configcli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
