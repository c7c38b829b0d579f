"""shared.configlib: coercion, sourced trees from YAML, layered overrides, build errors that name the
origin and the field, validate hooks, docstring --help, and dumping."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal, Optional

import pytest
import yaml

from shared import configlib
from shared.configlib import ConfigError, Sourced


@dataclass
class Optim:
    """Optimiser settings."""

    lr: float = 1e-3
    """Peak learning rate of AdamW (100% of the schedule's top)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """Adam betas."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule."""

    def validate(self) -> None:
        configlib.require(self.lr > 0, "lr", "must be > 0")


@dataclass
class Arm:
    name: str
    """Arm name (required)."""
    weight: float = 1.0
    """Loss weight."""


@dataclass
class Run:
    """A whole run."""

    seed: int = 0
    """Seed of everything."""
    steps: int | None = None
    """Optimiser steps (None = until the data runs out)."""
    tags: dict[str, int] = field(default_factory=dict)
    """Free-form integer tags."""
    optim: Optim = field(default_factory=Optim)
    """Optimiser."""
    arms: list[Arm] = field(default_factory=list)
    """Post-training arms."""
    shape: tuple[int, int] = (2, 3)
    """Two integers."""
    derived: int = field(init=False, default=0)
    """Computed in __post_init__ (not settable)."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.steps == 13:
            raise configlib.FieldError("steps", "13 is unlucky")
        self.derived = self.seed + 1

    def validate(self) -> None:
        configlib.require(self.steps is None or self.steps >= 1, "steps", "must be >= 1 or null")
        configlib.require(self.optim.lr < 1, "optim.lr", "must be < 1 for this run")


@dataclass
class Child(Run):
    extra: bool = False
    """A field only the subclass has."""
    seed: int = 5
    """Seed, overridden in the subclass."""


def _yaml(text: str, source: str = "my.yaml") -> dict:
    return configlib.parse_yaml_sourced(text, source, yaml)


# ---------------------------------------------------------------- coercion


@pytest.mark.parametrize(
    "annotation, value, expected",
    [
        (int, 3, 3),
        (int, 4.0, 4),
        (float, 2, 2.0),
        (float, "1e-5", 1e-5),  # YAML 1.1 reads 1e-5 as a string
        (bool, False, False),
        (str, "x", "x"),
        (Optional[int], None, None),
        (int | None, 7, 7),
        (int | str, "a", "a"),
        (Literal["a", "b"], "b", "b"),
        (list[int], [1, 2.0], [1, 2]),
        (tuple[int, ...], [1, 2], (1, 2)),
        (tuple[int, str], [1, "x"], (1, "x")),
        (dict[str, float], {"a": 1, 2: 3}, {"a": 1.0, "2": 3.0}),
        (Any, {"anything": [1]}, {"anything": [1]}),
        (object, 3, 3),
        (Arm, {"name": "x"}, Arm("x")),
        (list[Arm], [{"name": "a", "weight": 2}], [Arm("a", 2.0)]),
    ],
)
def test_coerce_accepts_and_converts(annotation, value, expected):
    out = configlib.coerce(value, annotation, "here")
    assert out == expected and type(out) is type(expected)


@pytest.mark.parametrize(
    "annotation, value, message",
    [
        (int, True, "here: expected an integer, got True"),
        (int, 2.5, "here: expected an integer, got 2.5"),
        (int, "3", "here: expected an integer, got '3'"),
        (float, "fast", "here: expected a number, got 'fast'"),
        (float, False, "here: expected a number, got False"),
        (bool, "yes please", "here: expected true or false"),
        (str, 3, "here: expected a string, got 3"),
        (int | None, "x", "here: expected int or null, got 'x'"),
        (Literal["a", "b"], "c", "here: expected one of ['a', 'b'], got 'c'"),
        (Literal[1, 2], True, "expected one of [1, 2], got True"),
        (list[int], "12", "here: expected a list, got '12'"),
        (list[int], [1, "x"], "here: field [1]: expected an integer, got 'x'"),
        (list[int] | None, [1, "x"], "field [1]: expected an integer"),  # the element-level error wins
        (tuple[int, int], [1], "expected a list of 2 items"),
        (dict[str, int], [1], "here: expected a mapping, got [1]"),
        (dict[str, int], {"k": "v"}, "here: field k: expected an integer, got 'v'"),
        (Arm, 3, "here: expected a mapping of Arm fields, got 3"),
        (list[Arm], [{"name": "a", "wieght": 1}], "unknown field '[0].wieght'; did you mean '[0].weight'?"),
    ],
)
def test_coerce_errors_say_where_and_what(annotation, value, message):
    with pytest.raises(ConfigError) as e:
        configlib.coerce(value, annotation, "here")
    assert message in str(e.value)


def test_type_names():
    assert configlib.type_name(int | None) == "int or null"
    assert configlib.type_name(list[str]) == "list[str]"
    assert configlib.type_name(dict[str, float]) == "dict[str, float]"
    assert configlib.type_name(tuple[int, ...]) == "tuple[int, ...]"
    assert configlib.type_name(Literal["a", 1]) == "'a'|1"
    assert configlib.type_name(list[Literal["a", "b"]] | None, literal=str) == "list[a|b] or null"


# ---------------------------------------------------------------- YAML trees with line numbers


def test_yaml_tree_records_file_and_line_of_every_leaf():
    tree = _yaml("seed: 3\noptim:\n  lr: 1e-4\n  betas: [0.8, 0.9]\nempty: {}\nnothing:\n")
    assert tree["seed"] == Sourced(3, "my.yaml line 1")
    assert tree["optim"]["lr"] == Sourced("1e-4", "my.yaml line 3")
    assert tree["optim"]["betas"] == Sourced([0.8, 0.9], "my.yaml line 4")
    assert tree["empty"] == {}  # an empty subtree ("nothing to change"), not a leaf; it keeps its origin
    assert configlib.first_origin(tree["empty"]) == "my.yaml line 5"
    assert tree["nothing"].value is None
    assert _yaml("") == {} and _yaml("# only a comment\n") == {}


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [1, 2\n", "my.yaml: invalid YAML"),
        ("- 1\n- 2\n", "my.yaml line 1: the top level must be a mapping of fields"),
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "my.yaml line 4: duplicate key 'c'"),
        ("? [1, 2]\n: 3\n", "my.yaml line 1: keys must be plain names"),
        ("a: !!int abc\n", "my.yaml line 1: field a: cannot read the value"),
    ],
)
def test_yaml_errors_name_file_and_line(text, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        _yaml(text)


def test_nodes_are_duck_typed():
    """sourced_tree_from_nodes needs no PyYAML: any objects with id/value/start_mark will do."""

    def node(kind, value, line):
        return SimpleNamespace(id=kind, value=value, start_mark=SimpleNamespace(line=line))

    doc = node("mapping", [(node("scalar", "seed", 0), node("scalar", "4", 0)),
                           (node("scalar", "optim", 1), node("mapping", [(node("scalar", "lr", 2), node("scalar", "0.5", 2))], 2))], 0)
    tree = configlib.sourced_tree_from_nodes(doc, "fake", lambda n: float(n.value))
    assert tree == {"seed": Sourced(4.0, "fake line 1"), "optim": {"lr": Sourced(0.5, "fake line 3")}}
    assert configlib.build(Run, tree).optim.lr == 0.5


def test_load_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 2\n")
    assert configlib.load_yaml_file(p, yaml) == {"seed": Sourced(2, f"{p} line 1")}
    with pytest.raises(ConfigError, match="cannot read config file"):
        configlib.load_yaml_file(tmp_path / "missing.yaml", yaml)


# ---------------------------------------------------------------- building


def test_build_fills_defaults_and_converts():
    cfg = configlib.build(Run, _yaml("seed: 2\noptim:\n  lr: 1e-4\narms:\n  - name: a\n  - {name: b, weight: 3}\nshape: [4, 5]\n"))
    assert cfg.seed == 2 and cfg.derived == 3 and cfg.optim.lr == 1e-4 and cfg.optim.schedule == "constant"
    assert cfg.arms == [Arm("a"), Arm("b", 3.0)] and cfg.shape == (4, 5)
    assert configlib.build(Run) == Run()
    assert configlib.build(Run, {"seed": 1, "optim": {"lr": 0.5}}).optim.lr == 0.5  # plain dicts work too
    # A section given as {} keeps its defaults (null is an error, see below); an instance is taken as is.
    assert configlib.build(Run, _yaml("optim: {}\n")).optim == Optim()
    assert configlib.build(Run, configlib.overrides_tree(["optim={}"], yaml.safe_load)).optim == Optim()
    assert configlib.build(Run, {"optim": Sourced(Optim(lr=0.25), "code")}).optim.lr == 0.25


@pytest.mark.parametrize(
    "text, message",
    [
        ("seed: 1\noptim:\n  lr: fast\n", "my.yaml line 3: field optim.lr: expected a number, got 'fast'"),
        ("optim:\n  lrr: 1\n", "my.yaml line 2: unknown field 'optim.lrr'; did you mean 'optim.lr'?"),
        ("zzz: 1\n", "my.yaml line 1: unknown field 'zzz'; known: arms, optim, seed, shape, steps, tags"),
        ("seed: 1\noptimm: {}\n", "my.yaml line 2: unknown field 'optimm'; did you mean 'optim'?"),
        ("derived: 1\n", "unknown field 'derived'"),  # init=False fields are not settable
        ("optim: 3\n", "my.yaml line 1: field optim: expected a mapping of Optim fields, got 3"),
        ("optim:\n  schedule: linear\n", "my.yaml line 2: field optim.schedule: expected one of ['constant', 'cosine']"),
        ("tags:\n  a: 1\n  b: x\n", "my.yaml line 2: field tags.b: expected an integer, got 'x'"),
        ("arms:\n  - weight: 2\n", "my.yaml line 2: field arms[0].name: required (it has no default)"),
        ("arms:\n  - name: a\n    weight: heavy\n", "my.yaml line 2: field arms[0].weight: expected a number"),
        # __post_init__ errors get the section's origin; a FieldError names its own field and origin
        ("steps: 5\nseed: -1\n", "my.yaml line 1: invalid Run (section top level): seed must be >= 0"),
        ("seed: 1\nsteps: 13\n", "my.yaml line 2: field steps: 13 is unlucky"),
        # validate(): children first, each error at the value's origin
        ("optim:\n  lr: -1\n", "my.yaml line 2: field optim.lr: must be > 0"),
        ("seed: 1\nsteps: 0\n", "my.yaml line 2: field steps: must be >= 1 or null"),
        ("optim:\n  lr: 2\n", "my.yaml line 2: field optim.lr: must be < 1 for this run"),
    ],
)
def test_build_errors_name_origin_and_field(text, message):
    with pytest.raises(ConfigError) as e:
        configlib.build(Run, _yaml(text))
    assert message in str(e.value)


@dataclass
class Study:
    run: Run = field(default_factory=Run)
    """A nested section."""
    extra: Optim | None = None
    """An optional section: null is a real value here."""
    notes: dict[str, Any] = field(default_factory=lambda: {"a": 1})
    """A dict-typed field: {} is a real value here."""


def test_empty_mapping_in_a_yaml_file_keeps_the_earlier_layers_values():
    preset = _yaml("seed: 3\noptim:\n  lr: 0.5\n  schedule: cosine\n", "preset p")
    expected = configlib.build(Run, preset)
    for text in ("optim: {}\n", "optim: {}\ntags: {}\n", "{}\n"):
        assert configlib.build(Run, configlib.merge(preset, _yaml(text))) == expected, text
    nested = _yaml("run:\n  optim:\n    lr: 0.5\n", "preset p")
    for text in ("run: {}\n", "run:\n  optim: {}\n"):
        assert configlib.build(Study, configlib.merge(nested, _yaml(text))).run.optim.lr == 0.5, text
    # Alone, {} is the field's default; for a dict-typed field, an empty dict.
    origins: dict[str, str] = {}
    assert configlib.build(Run, configlib.merge(_yaml("optim: {}\ntags: {}\n")), origins=origins) == Run()
    assert origins == {"tags": "my.yaml line 2"}
    assert configlib.build(Study, _yaml("notes: {}\n")).notes == {}


_PRESETS = {Run: "optim:\n  lr: 0.5\n", Study: "run:\n  optim:\n    lr: 0.5\n"}


@pytest.mark.parametrize(
    "cls, text, message",
    [
        (Run, "seed: 1\noptim:\n", "my.yaml line 2: field optim: expected a mapping of Optim fields, got None"),
        (Run, "optim: null\n", "my.yaml line 1: field optim: expected a mapping of Optim fields, got None"),
        (Study, "run:\n  seed: 2\n  optim:\n", "my.yaml line 3: field run.optim: expected a mapping of Optim fields, got None"),
        (Study, "run:\n", "my.yaml line 1: field run: expected a mapping of Run fields, got None"),
    ],
)
def test_null_section_is_an_error_naming_file_line_and_field(cls, text, message):
    """Not a silent reset of the preset's section to the defaults."""
    preset = _yaml(_PRESETS[cls], "preset p")
    with pytest.raises(ConfigError) as e:
        configlib.build(cls, configlib.merge(preset, _yaml(text)))
    assert str(e.value) == message


def test_null_section_from_an_override_is_an_error():
    for items, message in [
        (["optim=null"], "override optim=null: field optim: expected a mapping of Optim fields, got None"),
        (["run={optim: null}"], "override run={optim: null}: field run.optim: expected a mapping of Optim fields, got None"),
    ]:
        with pytest.raises(ConfigError) as e:
            configlib.build(Study if items[0].startswith("run") else Run, configlib.overrides_tree(items, yaml.safe_load))
        assert str(e.value) == message


def test_null_and_empty_mapping_stay_values_for_optional_and_dict_fields():
    """Only dataclass-typed fields are sections: `X | None` takes null, `dict` takes {} (alone) as a value."""
    preset = _yaml("extra:\n  lr: 0.5\nnotes: {b: 2}\n", "preset p")
    assert configlib.build(Study, preset).extra == Optim(lr=0.5)
    assert configlib.build(Study, configlib.merge(preset, _yaml("extra:\n"))).extra is None
    assert configlib.build(Study, configlib.merge(preset, _yaml("extra: {}\n"))).extra == Optim(lr=0.5)
    assert configlib.build(Study, _yaml("extra: {}\n")).extra == Optim()
    assert configlib.build(Study, _yaml("notes: {}\n")).notes == {}
    assert configlib.build(Study, configlib.merge(preset, _yaml("notes: {c: 3}\n"))).notes == {"b": 2, "c": 3}
    with pytest.raises(ConfigError, match="^my.yaml line 1: field notes: expected a mapping, got None$"):
        configlib.build(Study, _yaml("notes:\n"))


def test_validate_error_for_a_default_value_says_so():
    @dataclass
    class Bad:
        n: int = 0
        """A count that must be positive."""

        def validate(self) -> None:
            configlib.require(self.n > 0, "n", "must be > 0")

    with pytest.raises(ConfigError, match="^default value: field n: must be > 0$"):
        configlib.build(Bad)


def test_build_reports_origins():
    origins: dict[str, str] = {}
    configlib.build(Run, _yaml("seed: 1\noptim:\n  lr: 0.1\n"), origins=origins)
    assert origins == {"seed": "my.yaml line 1", "optim.lr": "my.yaml line 3"}


def test_to_dict_round_trips_through_yaml():
    cfg = configlib.build(Run, _yaml("seed: 4\narms:\n  - name: a\ntags: {x: 1}\n"))
    data = configlib.to_dict(cfg)
    assert data["shape"] == [2, 3] and data["arms"] == [{"name": "a", "weight": 1.0}]
    again = configlib.build(Run, _yaml(yaml.safe_dump({k: v for k, v in data.items() if k != "derived"})))
    assert again == cfg


# ---------------------------------------------------------------- layers and overrides


def test_precedence_preset_then_file_then_overrides_then_flags():
    preset = _yaml("seed: 1\nsteps: 10\noptim:\n  lr: 0.1\n  schedule: cosine\n", "preset quick")
    file = _yaml("steps: 20\noptim:\n  lr: 0.2\n", "my.yaml")
    over = configlib.overrides_tree(["optim.lr=0.3", "seed=2", "seed=3"], yaml.safe_load)
    flags = configlib.flags_tree({"optim.lr": "0.4"}, yaml.safe_load)
    origins: dict[str, str] = {}
    cfg = configlib.build(Run, configlib.merge(preset, file, over, flags), origins=origins)
    assert (cfg.seed, cfg.steps, cfg.optim.lr, cfg.optim.schedule) == (3, 20, 0.4, "cosine")
    assert origins["optim.schedule"] == "preset quick line 5" and origins["steps"] == "my.yaml line 1"
    assert origins["seed"] == "override seed=3" and origins["optim.lr"] == "--optim.lr"


def test_merge_is_deep_and_never_shares_dicts():
    base = {"a": {"b": Sourced(1, "x"), "c": Sourced(2, "x")}, "d": Sourced(0, "x")}
    out = configlib.merge(base, {"a": {"b": Sourced(9, "y")}})
    assert configlib.strip(out) == {"a": {"b": 9, "c": 2}, "d": 0}
    configlib.set_path(out, ["a", "c"], Sourced(5, "z"))
    assert base["a"]["c"].value == 2
    # A leaf replaces a section and a section replaces a leaf.
    assert configlib.strip(configlib.merge(base, {"a": Sourced(None, "y")})) == {"a": None, "d": 0}
    assert configlib.strip(configlib.merge(base, {"d": {"e": Sourced(1, "y")}}))["d"] == {"e": 1}


def test_parse_override():
    assert configlib.parse_override("a.b=3") == (["a", "b"], Sourced(3, "override a.b=3"))
    assert configlib.parse_override("a=[1, 2]")[1].value == [1, 2]
    assert configlib.parse_override("a=hello world")[1].value == "hello world"  # not JSON: the raw string
    assert configlib.parse_override("a=")[1].value == ""
    assert configlib.parse_override("a=1e-5", yaml.safe_load)[1].value == "1e-5"
    path, val = configlib.parse_override("sft.steps=7", label="--set")
    assert path == ["sft", "steps"] and val.origin == "--set sft.steps=7"
    for item, message in [
        ("a.b", "override 'a.b': expected section.field=value"),
        ("=3", "override '=3': bad field name ''"),
        ("a..b=3", "override 'a..b=3': bad field name 'a..b'"),
        ("a=[1", "override 'a=[1': cannot parse the value"),
    ]:
        with pytest.raises(ConfigError) as e:
            configlib.parse_override(item, yaml.safe_load)
        assert message in str(e.value)


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"^override optim\.lr=fast: field optim\.lr: expected a number"):
        configlib.build(Run, configlib.overrides_tree(["optim.lr=fast"]))
    with pytest.raises(ConfigError, match=r"^--set sed=1: unknown field 'sed'; did you mean 'seed'\?"):
        configlib.build(Run, configlib.overrides_tree(["sed=1"], label="--set"))


def test_inherit_resolves_chains_and_rejects_cycles():
    files = {
        "base": "seed: 1\nsteps: 5\n",
        "mid": "preset: base\nsteps: 6\n",
        "top": "preset: mid\noptim:\n  lr: 0.5\n",
        "loop": "preset: loop2\n",
        "loop2": "preset: loop\n",
        "bad": "preset: [1]\n",
    }

    def load(name, chain):
        return configlib.inherit(_yaml(files[name], name), "preset", load, chain)

    cfg = configlib.build(Run, load("top", ("top",)))
    assert (cfg.seed, cfg.steps, cfg.optim.lr) == (1, 6, 0.5)
    with pytest.raises(ConfigError, match=r"loop2 line 1: preset cycle: loop -> loop2 -> loop"):
        load("loop", ("loop",))
    with pytest.raises(ConfigError, match=r"bad line 1: field 'preset' must be a preset name"):
        load("bad", ("bad",))


# ---------------------------------------------------------------- docs and --help


def test_field_docs_reads_docstrings_including_inherited_ones():
    docs = configlib.field_docs(Child)
    assert docs["seed"] == "Seed, overridden in the subclass."
    assert docs["steps"] == "Optimiser steps (None = until the data runs out)."
    assert docs["extra"] == "A field only the subclass has."
    assert configlib.field_docs(Optim)["lr"] == "Peak learning rate of AdamW (100% of the schedule's top)."
    assert set(configlib.field_docs(Run)) == {f.name for f in dataclasses.fields(Run)}


def test_leaf_fields_walk_sections():
    names = [name for name, *_ in configlib.leaf_fields(Run)]
    assert names == ["seed", "steps", "tags", "optim.lr", "optim.betas", "optim.schedule", "arms", "shape"]
    assert [n for n, *_ in configlib.leaf_fields(Optim, "train.optim")][0] == "train.optim.lr"


def test_help_lists_every_field_with_docstring_type_and_default(capsys):
    parser = argparse.ArgumentParser(prog="demo")
    configlib.add_arguments(parser, Run, title="run fields (also as key=value)")
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert "run fields (also as key=value)" in flat
    assert "--seed V Seed of everything. [int; default 0]" in flat
    assert "--steps V Optimiser steps (None = until the data runs out). [int or null; default null]" in flat
    assert "--optim.lr V Peak learning rate of AdamW (100% of the schedule's top). [float; default 0.001]" in flat
    assert "--optim.schedule V Learning-rate schedule. ['constant'|'cosine'; default 'constant']" in flat
    assert "[list[float]; default [0.9, 0.999]]" in flat
    assert "--derived" not in flat


def test_help_style_can_be_changed(capsys):
    parser = argparse.ArgumentParser(prog="demo")
    help_text = functools.partial(configlib.field_help, literal=str, none="None")
    configlib.add_arguments(parser, Run, help_text=help_text)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    flat = " ".join(capsys.readouterr().out.split())
    assert "Learning-rate schedule. [constant|cosine; default 'constant']" in flat
    assert "[int or null; default None]" in flat


def test_flags_from_the_command_line_are_type_checked_at_build():
    parser = argparse.ArgumentParser()
    configlib.add_arguments(parser, Run)
    flags = configlib.flags_from_args(parser.parse_args(["--optim.lr", "0.5", "--arms", "[{name: a}]"]))
    assert flags == {"optim.lr": "0.5", "arms": "[{name: a}]"}
    cfg = configlib.build(Run, configlib.flags_tree(flags, yaml.safe_load))
    assert cfg.optim.lr == 0.5 and cfg.arms == [Arm("a")]
    bad = configlib.flags_from_args(parser.parse_args(["--seed", "many"]))
    with pytest.raises(ConfigError, match=r"^--seed: field seed: expected an integer, got 'many'"):
        configlib.build(Run, configlib.flags_tree(bad, yaml.safe_load))


def test_a_mapping_override_merges_like_the_same_mapping_in_a_file():
    """``--set optim={lr: 0.25}`` changes optim.lr only; the section's other fields keep the earlier
    layers' values (it used to reset them to the defaults), with the override's origin on what it set."""
    preset = _yaml("seed: 3\noptim:\n  lr: 0.5\n  schedule: cosine\n  betas: [0.8, 0.9]\n", "preset p")
    origins: dict[str, str] = {}
    over = configlib.overrides_tree(["optim={lr: 0.25}"], yaml.safe_load)
    cfg = configlib.build(Run, configlib.merge(preset, over), origins=origins)
    assert cfg.optim == Optim(lr=0.25, betas=[0.8, 0.9], schedule="cosine") and cfg.seed == 3
    assert origins["optim.lr"] == "override optim={lr: 0.25}" and origins["optim.schedule"] == "preset p line 4"
    # Same result as the mapping written in a file.
    assert cfg == configlib.build(Run, configlib.merge(preset, _yaml("optim: {lr: 0.25}\n")))
    # {} changes nothing; later items win whichever form they take; a list value still replaces.
    assert configlib.build(Run, configlib.merge(preset, configlib.overrides_tree(["optim={}"], yaml.safe_load))) == configlib.build(Run, preset)
    for items, lr in [(["optim={lr: 0.1}", "optim.lr=0.2"], 0.2), (["optim.lr=0.2", "optim={lr: 0.1}"], 0.1)]:
        assert configlib.build(Run, configlib.merge(preset, configlib.overrides_tree(items, yaml.safe_load))).optim.lr == lr
    assert configlib.build(Run, configlib.merge(preset, configlib.overrides_tree(["optim={betas: [0.1]}"], yaml.safe_load))).optim.betas == [0.1]
    # Nested sections merge at every level; a bad field inside the mapping names the override.
    nested = _yaml("run:\n  seed: 4\n  optim:\n    lr: 0.5\n    schedule: cosine\n", "preset p")
    study = configlib.build(Study, configlib.merge(nested, configlib.overrides_tree(["run={optim: {lr: 0.1}}"], yaml.safe_load)))
    assert study.run.seed == 4 and study.run.optim.lr == 0.1 and study.run.optim.schedule == "cosine"
    with pytest.raises(ConfigError, match=r"^override optim=\{lrr: 1\}: unknown field 'optim.lrr'; did you mean 'optim.lr'"):
        configlib.build(Run, configlib.merge(preset, configlib.overrides_tree(["optim={lrr: 1}"], yaml.safe_load)))


# ---------------------------------------------------------------- renamed fields


@configlib.renamed(lr="learning_rate", steps="max_steps")
@dataclass
class NewOptim:
    learning_rate: float = 1e-3
    """Peak learning rate."""
    max_steps: int = 10
    """Optimiser steps."""


@dataclass
class NewRun:
    seed: int = 0
    """Seed."""
    optim: NewOptim = field(default_factory=NewOptim)
    """Optimiser."""
    variants: dict[str, dict[str, object]] = field(default_factory=dict)
    """Named dotted overrides."""


@pytest.mark.parametrize(
    "layer, message",
    [
        (lambda: _yaml("optim:\n  lr: 0.5\n"), "my.yaml line 2: field 'optim.lr' was renamed to 'optim.learning_rate'"),
        (lambda: configlib.overrides_tree(["optim.steps=3"], yaml.safe_load), "override optim.steps=3: field 'optim.steps' was renamed to 'optim.max_steps'"),
        (lambda: configlib.overrides_tree(["optim={lr: 1}"], yaml.safe_load), "field 'optim.lr' was renamed to 'optim.learning_rate'"),
        (lambda: configlib.flags_tree({"optim.lr": "0.5"}, yaml.safe_load), "--optim.lr: field 'optim.lr' was renamed to 'optim.learning_rate'"),
    ],
)
def test_an_old_name_is_rejected_with_the_new_one_wherever_it_comes_from(layer, message):
    with pytest.raises(ConfigError) as e:
        configlib.build(NewRun, layer())
    assert message in str(e.value)


def test_old_names_get_hidden_flags_that_fail_with_a_hint():
    parser = argparse.ArgumentParser()
    configlib.add_arguments(parser, NewRun)
    assert "--optim.lr" not in parser.format_help() and "--optim.learning_rate" in parser.format_help()
    flags = configlib.flags_from_args(parser.parse_args(["--optim.lr", "0.5"]))
    with pytest.raises(ConfigError, match=r"^--optim\.lr: field 'optim\.lr' was renamed to 'optim\.learning_rate'"):
        configlib.build(NewRun, configlib.flags_tree(flags, yaml.safe_load))


def test_renamed_path_upgrade_names_and_old_name_hashes():
    assert configlib.renamed_path(NewRun, "optim.lr") == "optim.learning_rate"
    assert configlib.renamed_path(NewRun, "optim.learning_rate") is None and configlib.renamed_path(NewRun, "nope.lr") is None
    assert configlib.renamed_fields(NewOptim) == {"lr": "learning_rate", "steps": "max_steps"}
    # a run folder's own record written before the rename reads as the new names
    old = _yaml("seed: 2\noptim:\n  lr: 0.5\n  steps: 4\n")
    cfg = configlib.build(NewRun, configlib.upgrade_names(NewRun, old))
    assert (cfg.seed, cfg.optim.learning_rate, cfg.optim.max_steps) == (2, 0.5, 4)
    assert configlib.to_dict(cfg, old_names=True) == {"seed": 2, "optim": {"lr": 0.5, "steps": 4}, "variants": {}}
    assert configlib.to_dict(cfg)["optim"] == {"learning_rate": 0.5, "max_steps": 4}


def test_the_shared_command_line_grammar():
    parser = argparse.ArgumentParser(epilog=configlib.GRAMMAR)
    configlib.add_config_arguments(parser, presets=["a", "b"], default_preset="a")
    configlib.add_arguments(parser, NewRun)
    ns = parser.parse_args(["--optim.learning_rate", "0.1", "--set", "optim.learning_rate=0.2", "--set", "seed=3", "--print-config"])
    assert (ns.preset, ns.config, ns.print_config) == ("a", None, True)
    origins: dict = {}
    cfg = configlib.build(NewRun, configlib.command_line_tree(ns, yaml.safe_load), origins=origins)
    assert (cfg.optim.learning_rate, cfg.seed) == (0.2, 3)  # --set wins over the flag
    assert origins == {"optim.learning_rate": "--set optim.learning_rate", "seed": "--set seed"}
    usage = " ".join(parser.format_usage().split())
    assert "[--preset NAME] [--config FILE] [--set a.b=v] [--print-config]" in usage
