"""YAML documents as :mod:`shared.configlib` trees: every leaf :class:`~shared.configlib.Sourced` with
``<source> line N``, so a bad value names its file and line.

Duck-typed: the front end passes its ``yaml`` module (PyYAML) in, and :func:`sourced_tree_from_nodes` takes
any composed nodes with ``id`` / ``value`` / ``start_mark``; this module never imports PyYAML. The names
are re-exported by :mod:`shared.configlib`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.configlib import ConfigError, Sourced, _EmptyTree

__all__ = ["load_yaml_file", "parse_yaml_sourced", "sourced_tree_from_nodes"]


def _line(source: str, node: Any) -> str:
    mark = getattr(node, "start_mark", None)
    return f"{source} line {mark.line + 1}" if mark is not None else source


def sourced_tree_from_nodes(node: Any, source: str, construct: Callable[[Any], Any]) -> dict:
    """Tree of a composed YAML document (PyYAML's ``yaml.compose``), each leaf :class:`Sourced` with
    ``<source> line N``. Nodes are duck-typed (``id`` is ``mapping``/``scalar``/``sequence``, ``value``,
    ``start_mark.line``); ``construct(node)`` turns a leaf node into its Python value. A mapping becomes a
    dict, an empty one (``{}``) included: an empty subtree, which :func:`merge` takes as "nothing to
    change" and :func:`build` as the field's default (an empty dict for a dict-typed field). Anything else
    (scalars, sequences, null) is a leaf. Keys must be plain scalars and unique."""
    if node is None:
        return {}
    if getattr(node, "id", None) != "mapping":
        raise ConfigError(f"{_line(source, node)}: the top level must be a mapping of fields")
    return _tree_from_mapping(node, source, construct)


def _tree_from_mapping(node: Any, source: str, construct: Callable[[Any], Any]) -> dict:
    out: dict[str, Any] = {}
    for k, v in node.value:
        if getattr(k, "id", None) != "scalar":
            raise ConfigError(f"{_line(source, k)}: keys must be plain names")
        key = str(k.value)
        if key in out:
            raise ConfigError(f"{_line(source, k)}: duplicate key {key!r}")
        if getattr(v, "id", None) == "mapping":
            out[key] = _tree_from_mapping(v, source, construct) if v.value else _EmptyTree(_line(source, v))
            continue
        origin = _line(source, v)
        try:
            value = construct(v)
        except Exception as e:  # e.g. a bad explicit tag (!!int abc)
            raise ConfigError(f"{origin}: field {key}: cannot read the value ({e})") from e
        out[key] = Sourced(value, origin)
    return out


def parse_yaml_sourced(text: str, source: str, yaml: Any) -> dict:
    """Tree of a YAML mapping given as text; ``yaml`` is the PyYAML module (passed in by the front end).

    Errors: invalid YAML, a top level that is not a mapping, non-scalar or duplicate keys, each a
    :class:`ConfigError` naming ``source`` (and the line)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from e

    def construct(leaf: Any) -> Any:
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_document(leaf)
        finally:
            loader.dispose()

    return sourced_tree_from_nodes(node, source, construct)


def load_yaml_file(path: str | Path, yaml: Any, source: str | None = None) -> dict:
    """:func:`parse_yaml_sourced` of a file; origins read ``<path> line N`` (or ``<source> line N``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from e
    return parse_yaml_sourced(text, source or str(path), yaml)
