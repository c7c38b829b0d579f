"""One command-line grammar for both front ends (issue 13 item 4): ``stargraph`` and ``mathreason`` take the
same config options (``--preset NAME``, ``--config FILE``, ``--set a.b=v``, per-field flags,
``--print-config``), use the same field names for the same concepts (learning rate, steps, warm-up, gradient
clipping, seed, device), refuse the old spellings with the new one, and show the same grammar in ``--help``."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mathreason.cli import main as mathreason_main
from mathreason.config import load_config
from mathreason.stages import STAGES, Context, stage_key
from shared import configlib
from stargraph.cli import main as stargraph_main

REPO = Path(__file__).resolve().parent.parent

# One override of every shared concept: (stargraph train path, mathreason sft path, value as written, value read).
CONCEPTS = [
    ("learning_rate", "sft.learning_rate", "sft.learning_rate", "2.5e-4", 2.5e-4),
    ("max_steps", "sft.max_steps", "sft.max_steps", "17", 17),
    ("warmup_steps (a fraction)", "sft.warmup_steps", "sft.warmup_steps", "0.25", 0.25),
    ("warmup_steps (steps)", "sft.warmup_steps", "sft.warmup_steps", "7", 7.0),
    ("max_grad_norm", "sft.max_grad_norm", "sft.max_grad_norm", "0.5", 0.5),
    ("seed", "seed", "seed", "11", 11),
    ("device", "runtime.device", "device", "cpu", "cpu"),
]

OLD_SPELLINGS = [  # (CLI, old, new) as the config path of `stargraph train` / `mathreason sft`
    ("stargraph", "sft.lr", "sft.learning_rate"),
    ("stargraph", "sft.steps", "sft.max_steps"),
    ("stargraph", "sft.grad_clip", "sft.max_grad_norm"),
    ("mathreason", "sft.warmup_ratio", "sft.warmup_steps"),
]


def _run(cli: str, *args: str) -> subprocess.CompletedProcess:
    """``<cli> args...`` in this process (its ``main``): exit status, stdout, stderr."""
    main = {"stargraph": stargraph_main, "mathreason": mathreason_main}[cli]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:  # --help
            rc = e.code
    return subprocess.CompletedProcess([cli, *args], rc, out.getvalue(), err.getvalue())


def test_the_grammar_runs_as_the_installed_commands_too():
    for cli in ("stargraph", "mathreason"):
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        args = ["train" if cli == "stargraph" else "sft", "--preset", "tiny", "--set", "seed=5", "--print-config"]
        out = subprocess.run([sys.executable, "-m", f"{cli}.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert out.returncode == 0 and yaml.safe_load(out.stdout)["seed"] == 5, out.stderr


def _print_config(cli: str, *args: str) -> dict:
    command = ["train", "--preset", "tiny"] if cli == "stargraph" else ["sft", "--preset", "tiny"]
    out = _run(cli, *command, *args, "--print-config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def _get(tree: dict, dotted: str):
    for p in dotted.split("."):
        tree = tree[p]
    return tree


def test_one_override_of_each_shared_concept_through_both_clis():
    """Every concept by ``--set``, then by its per-field flag, in one run of each CLI per way of writing it."""
    for how in ("--set", "flag"):
        for cli, col in (("stargraph", 1), ("mathreason", 2)):
            args: list[str] = []
            for concept in CONCEPTS:
                if concept[0] == "warmup_steps (steps)":
                    continue  # one warm-up value per run; the other is checked below
                path, raw = concept[col], concept[3]
                args += ["--set", f"{path}={raw}"] if how == "--set" else [f"--{path}", raw]
            cfg = _print_config(cli, *args)
            for concept in CONCEPTS:
                if concept[0] != "warmup_steps (steps)":
                    assert _get(cfg, concept[col]) == concept[4], (cli, how, concept)
    for cli, col in (("stargraph", 1), ("mathreason", 2)):
        concept = next(c for c in CONCEPTS if c[0] == "warmup_steps (steps)")
        assert _get(_print_config(cli, "--set", f"{concept[col]}={concept[3]}"), concept[col]) == concept[4]


@pytest.mark.parametrize("cli, old, new", OLD_SPELLINGS)
def test_old_spellings_are_rejected_with_the_new_one(cli, old, new, tmp_path):
    command = ["train", "--preset", "tiny"] if cli == "stargraph" else ["sft", "--preset", "tiny"]
    hint = f"field '{old}' was renamed to '{new}'"
    for how in (["--set", f"{old}=1"], [f"--{old}", "1"]):
        out = _run(cli, *command, *how, "--print-config")
        assert out.returncode == 2 and hint in out.stderr, out.stderr
    f = tmp_path / "old.yaml"
    section, field = old.split(".")
    f.write_text(f"train:\n  {section}:\n    {field}: 1\n" if cli == "stargraph" else f"{section}:\n  {field}: 1\n")
    out = _run(cli, *command, "--config", str(f), "--print-config")
    assert out.returncode == 2 and f"{f} line " in out.stderr and hint in out.stderr, out.stderr


def test_mathreason_refuses_the_old_override_forms_with_a_hint():
    out = _run("mathreason", "sft", "--preset", "tiny", "sft.learning_rate=1e-3", "--print-config")
    assert out.returncode == 2 and "write --set sft.learning_rate=1e-3" in out.stderr
    out = _run("mathreason", "sft", "--config", "tiny", "--print-config")
    assert out.returncode == 2 and "write --preset tiny" in out.stderr
    out = _run("mathreason", "sft", "--print-config")
    assert out.returncode == 2 and "--preset NAME" in out.stderr and "--config FILE" in out.stderr


def test_mathreason_preset_config_file_and_set_layer_as_in_stargraph(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("sft:\n  learning_rate: 3.0e-4\n  max_steps: 5\n")
    cfg = _print_config("mathreason", "--config", str(f), "--sft.max_steps", "6", "--set", "sft.max_steps=7")
    assert (cfg["sft"]["learning_rate"], cfg["sft"]["max_steps"], cfg["model"]["name_or_path"]) == (3e-4, 7, "tiny-random-llama")
    f.write_text("preset: tiny\nseed: 4\n")  # a file may still start from a preset
    out = _run("mathreason", "show-config", "--config", str(f), "--set", "sft.warmup_steps=3")
    assert out.returncode == 0 and yaml.safe_load(out.stdout)["seed"] == 4 and yaml.safe_load(out.stdout)["sft"]["warmup_steps"] == 3.0


def test_both_help_outputs_show_the_same_grammar():
    usage = "[--preset NAME] [--config FILE] [--set a.b=v] [--print-config]"
    for cli, command in (("stargraph", "train"), ("mathreason", "sft"), ("stargraph", "sweep"), ("mathreason", "pipeline")):
        out = _run(cli, command, "--help")
        assert out.returncode == 0
        flat = " ".join(out.stdout.split())
        assert usage in flat, (cli, command)
        assert configlib.GRAMMAR in out.stdout, (cli, command)  # the same lines, word for word
        for option in ("--preset NAME", "--config FILE", "--set a.b=v", "--print-config"):
            assert option in flat
    for cli in ("stargraph", "mathreason"):
        out = _run(cli, "--help")
        assert out.returncode == 0 and configlib.GRAMMAR in out.stdout, cli


def test_the_warmup_rename_leaves_mathreason_stage_keys_as_they_were(tmp_path):
    """Stage keys hash the config under the field names of the key format (``sft.warmup_ratio``), so existing
    run folders keep their stage records; these keys were computed before the rename."""
    cfg = load_config("tiny", [f"run_dir={tmp_path}"])
    ctx = Context(cfg, progress=False)
    before = {
        "sft": "8fc4bd9ada624a7ff6f6bd88f1ea40588fcf6a2e408a3988874b7954c3a4d50b",
        "pref": "2ec13769c4227ed5c6a494184ba5d028c15fd7133818e7da77b42092c43ef2b2",
    }
    for name, key in before.items():
        assert stage_key(STAGES[name], ctx, {"x": "y"}) == key, f"the {name} stage key changed: every run folder would re-run it"
    assert "warmup_ratio" in configlib.to_dict(cfg, old_names=True)["sft"] and "warmup_steps" in configlib.to_dict(cfg)["sft"]


def test_mathreason_device(monkeypatch):
    import torch

    from mathreason.stages.base import apply_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # restored after the test
    if not torch.cuda.is_initialized():
        apply_device("cpu")
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # inherited by a training launcher's processes
    apply_device("auto")
    if not torch.cuda.is_available():
        with pytest.raises(configlib.ConfigError, match="field device: cuda: no CUDA device"):
            apply_device("cuda")


def test_old_names_in_dotted_keys_kept_as_data_are_refused_too():
    out = _run("mathreason", "pipeline", "--preset", "tiny", "--set", "pipeline.variants={w: [pref.train.warmup_ratio=0.1]}", "--print-config")
    assert out.returncode == 2 and "variant 'w': field 'pref.train.warmup_ratio' was renamed to 'pref.train.warmup_steps'" in out.stderr
    out = _run("stargraph", "sweep", "--preset", "tiny_sweep", "--set", "variants={v: {posttrain.lr: 0.1}}", "--print-config")
    assert out.returncode == 2 and "variant 'v': key 'posttrain.lr' was renamed to 'posttrain.learning_rate'" in out.stderr
