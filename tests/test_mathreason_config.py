"""Typed configs: presets, documented fields (--help), overrides, and errors that name file, line, field."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest
import yaml

from mathreason.config import (
    Config,
    ConfigError,
    available_presets,
    dump_yaml,
    field_docs,
    leaf_fields,
    load_config,
    to_dict,
)


def _all_sections(cls=Config):
    yield cls
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _all_sections(hints[f.name])


def test_every_field_is_documented():
    for cls in set(_all_sections()):
        docs = field_docs(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not missing, f"{cls.__name__} fields without a docstring: {missing}"


@pytest.mark.parametrize("name", ["tiny", "gsm8k", "math"])
def test_presets_load_and_round_trip(name, tmp_path):
    assert name in available_presets()
    cfg = load_config(name)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert to_dict(load_config(str(path))) == to_dict(cfg)


def test_paper_recipe_defaults():
    g, m = load_config("gsm8k"), load_config("math")
    assert g.sft.learning_rate == 1e-5 and g.sft.epochs == 3 and g.sft.max_length == 1024
    assert g.sample.max_tokens == 512 and m.sample.max_tokens == 1024
    assert g.sample.n == 8 and g.rft.init == "base" and g.rft.dedup == "text+equations"
    assert m.data.dataset == "math" and m.data.prompt_template == "math-zeroshot-v1"
    assert "math500" in m.eval.benchmarks and "gsm8k" in g.eval.benchmarks
    t = load_config("tiny")
    assert t.model.name_or_path == "tiny-random-llama" and t.data.dsyn == "tiny"


def test_overrides_and_file_layers(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("preset: tiny\nsft:\n  learning_rate: 1e-4\nsample:\n  n: 3\n")
    cfg = load_config(str(f), ["sample.n=2", "eval.benchmarks=[tiny]"], flags={"seed": "7"})
    assert cfg.sft.learning_rate == 1e-4  # YAML reads "1e-4" as a string; the float field accepts it
    assert cfg.sample.n == 2 and cfg.seed == 7
    assert cfg.model.name_or_path == "tiny-random-llama"  # from the preset


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("preset: tiny\nsft:\n  learning_rate: fast\n", r"my\.yaml line 3: field sft\.learning_rate: expected a number"),
        ("preset: tiny\nsample:\n  top_p: 1.5\n", r"my\.yaml line 3: field sample\.top_p: must lie in \(0, 1\]"),
        ("preset: tiny\nsample:\n  nn: 3\n", r"my\.yaml line 3: unknown field 'sample\.nn'; did you mean 'sample\.n'"),
        ("preset: tiny\nrft:\n  samples_per_question: 9\n", r"my\.yaml line 3: field rft\.samples_per_question: must be <= sample\.n"),
        ("preset: tiny\nsft:\n  batch_size: 6\n  per_device_batch_size: 4\n", r"line 3: field sft\.batch_size: must be a multiple"),
        ("preset: tiny\nrft:\n  dedup: fuzzy\n", r"my\.yaml line 3: field rft\.dedup: expected one of"),
        ("preset: nope\n", r"unknown preset 'nope'"),
        ("sft: [1, 2\n", r"my\.yaml: invalid YAML"),
        ("- a\n- b\n", r"my\.yaml line 1: the top level must be a mapping"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, text, pattern):
    f = tmp_path / "my.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(str(f))


def test_override_errors_name_the_override():
    with pytest.raises(ConfigError, match=r"override sample\.n=zero: field sample\.n: expected an integer"):
        load_config("tiny", ["sample.n=zero"])
    with pytest.raises(ConfigError, match=r"--sft\.epochs: field sft\.epochs"):
        load_config("tiny", flags={"sft.epochs": "many"})


def test_help_shows_field_docs():
    out = subprocess.run(
        [sys.executable, "-m", "mathreason.cli", "sample", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for name, _tp, _f, doc in leaf_fields(Config):
        assert f"--{name}" in flat
    assert "Samples per question (M)" in flat
    assert "Nucleus sampling mass" in flat


def test_resolved_yaml_is_plain_yaml():
    data = yaml.safe_load(dump_yaml(load_config("gsm8k")))
    assert data["model"]["name_or_path"] == "deepseek-ai/deepseek-math-7b-base"
    assert data["sample"]["backend"]["enable_prefix_caching"] is True


def test_a_mapping_override_changes_only_the_fields_it_names():
    base = load_config("tiny")
    cfg = load_config("tiny", ["sft={learning_rate: 2.0e-4}"])
    assert cfg.sft.learning_rate == 2e-4
    assert dataclasses.replace(cfg.sft, learning_rate=base.sft.learning_rate) == base.sft  # the rest is the preset's
    assert load_config("tiny", ["sft={}"]) == base
