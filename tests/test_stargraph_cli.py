"""The ``stargraph`` CLI: --help of every subcommand, config resolution and errors, ``reproduce`` with the
tiny preset (every output file), ``figures`` offline, and a resumable ``sweep``."""

from __future__ import annotations

import json
from dataclasses import replace
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stargraph import cli, configlib, runio
from stargraph.config import ReproduceConfig, SweepConfig, TrainConfig, resolve
from stargraph.configlib import ConfigError
from stargraph.graphs import make_splits

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    make_splits.cache_clear()
    yield
    make_splits.cache_clear()


@pytest.mark.parametrize("command", ["train", "posttrain", "reproduce", "sweep", "figures", "rescore"])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: stargraph" in out
    if command == "train":
        assert "--sft.learning_rate" in out and "Peak AdamW learning rate" in out  # field docstrings become help
    if command == "posttrain":
        assert "--objective" in out and "per_step_dpo" in out and "--pool.policy" in out


def test_help_runs_as_a_module():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "stargraph.cli", "--help"], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0 and "reproduce" in out.stdout


def test_every_preset_resolves():
    for name in ("quick", "paper", "tiny"):
        cfg = resolve(ReproduceConfig, preset=name, config_file=None, overrides={})
        assert cfg.arms and cfg.panel_a in {a.name for a in cfg.arms}
        assert resolve(TrainConfig, preset=name, config_file=None, overrides={}, preset_section="train").sft.max_steps > 0
    sw = resolve(SweepConfig, preset="sweep", config_file=None, overrides={})
    assert sw.objectives and sw.pools
    paper = resolve(ReproduceConfig, preset="paper", config_file=None, overrides={})
    d, m = paper.train.data, paper.train.model
    assert (d.degree, d.path_len, d.num_nodes, m.n_layer, m.n_embd, m.n_head) == (2, 5, 50, 6, 384, 6)


def test_resolution_order_preset_then_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  sft:\n    learning_rate: 0.01\n    max_steps: 17\n")
    over = configlib.overrides_from_args(cli.build_parser().parse_args(["train", "--preset", "tiny", "--set", "sft.max_steps=19"]))
    cfg = resolve(TrainConfig, preset="tiny", config_file=str(f), overrides=over, preset_section="train")
    assert cfg.sft.learning_rate == 0.01 and cfg.sft.max_steps == 19 and cfg.model.n_embd == 16
    over = configlib.overrides_from_args(cli.build_parser().parse_args(["train", "--sft.max_steps", "21"]))
    assert resolve(TrainConfig, preset="tiny", config_file=None, overrides=over, preset_section="train").sft.max_steps == 21


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  sft:\n    learning_rate: fast\n", "line 3: field sft.learning_rate: expected a number"),
        ("train:\n  sft:\n    nope: 1\n", "line 3: unknown field 'sft.nope'"),
        ("train:\n  data:\n    degree: 9\n    num_nodes: 10\n", "invalid"),
        ("posttrain:\n  objective: magic\n", "line 2: field objective: expected one of"),
    ],
)
def test_bad_config_names_file_line_and_field(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    section = "posttrain" if text.startswith("posttrain") else "train"
    cls = {"train": TrainConfig, "posttrain": __import__("stargraph.config", fromlist=["PostTrainConfig"]).PostTrainConfig}[section]
    with pytest.raises(ConfigError) as e:
        resolve(cls, preset=None, config_file=str(f), overrides={}, preset_section=section)
    assert str(f) in str(e.value) and needle in str(e.value)


def test_empty_and_null_sections_in_a_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  sft: {}\n  data: {}\n")  # {}: nothing to change, the preset's values stay
    tiny = resolve(TrainConfig, preset="tiny", config_file=None, overrides={}, preset_section="train")
    assert resolve(TrainConfig, preset="tiny", config_file=str(f), overrides={}, preset_section="train") == tiny
    f.write_text("train: {}\n")
    assert resolve(TrainConfig, preset="tiny", config_file=str(f), overrides={}, preset_section="train") == tiny
    f.write_text("train:\n  sft:\n")  # null: an error, not a silent reset to the defaults
    with pytest.raises(ConfigError, match=r"line 2: field sft: expected a mapping of SFTConfig fields, got None"):
        resolve(TrainConfig, preset="tiny", config_file=str(f), overrides={}, preset_section="train")
    over = configlib.overrides_from_args(cli.build_parser().parse_args(["train", "--set", "train={sft: null}"]))
    with pytest.raises(ConfigError, match=r"^--set train: field train.sft: expected a mapping"):
        configlib.build(ReproduceConfig, over)


def test_cli_reports_bad_override(capsys):
    assert cli.main(["train", "--preset", "tiny", "--set", "sft.max_steps=many", "--print-config"]) == 2
    assert "--set sft.max_steps" in capsys.readouterr().err


def test_print_config(capsys):
    assert cli.main(["reproduce", "--preset", "tiny", "--print-config", "--seeds", "[3, 4]"]) == 0
    out = capsys.readouterr().out
    assert "seeds:\n- 3\n- 4" in out or "seeds: [3, 4]" in out


def test_reproduce_tiny_writes_every_output(tmp_path):
    run = tmp_path / "run"
    assert cli.main(["reproduce", str(run), "--preset", "tiny"]) == 0
    for name in ("config.yaml", "summary.json", "sft_curves.csv", "arm_curves.csv", "final.csv", "fig8a.png", "fig8b.png", "fig8c.png"):
        assert (run / name).exists() and (run / name).stat().st_size > 0, name
    cfg = configlib.build(ReproduceConfig, configlib.load_yaml(run / "config.yaml"))
    summary = json.loads((run / "summary.json").read_text())
    for arm in ["sft", *(a.name for a in cfg.arms)]:
        for s in cfg.seeds:
            entry = summary["arms"][arm][str(s)]
            assert {"train_acc", "test_acc", "wall_time_s"} <= set(entry)
            assert 0 <= entry["test_acc"] <= 1 and entry["wall_time_s"] >= 0
    for s in cfg.seeds:
        assert runio.read_jsonl(run / f"seed_{s}" / "sft" / "metrics.jsonl")
        for a in cfg.arms:
            assert runio.read_jsonl(run / f"seed_{s}" / "arms" / a.name / "metrics.jsonl")
    # figures regenerate offline from the folder alone
    for p in ("fig8a.png", "fig8b.png", "fig8c.png"):
        (run / p).unlink()
    assert cli.main(["figures", str(run)]) == 0
    assert (run / "fig8a.png").exists() and (run / "fig8c.png").exists()
    # re-running skips the completed stages and gives the same results
    before = (run / "final.csv").read_text()
    assert cli.main(["reproduce", str(run), "--preset", "tiny"]) == 0
    assert (run / "final.csv").read_text() == before


def test_figures_on_a_non_run_folder_fails_cleanly(tmp_path, capsys):
    assert cli.main(["figures", str(tmp_path)]) == 2
    assert "not a reproduce or sweep folder" in capsys.readouterr().err


def test_sweep_runs_every_point_and_resumes(tmp_path):
    run = tmp_path / "sweep"
    args = [
        "sweep", str(run), "--preset", "tiny_sweep",
    ]
    assert cli.main(args) == 0
    rows = runio.read_jsonl(run / "points.jsonl")
    cfg = configlib.build(SweepConfig, configlib.load_yaml(run / "config.yaml"))
    per_pool = sum(1 if o in ("sft", "sft_critical") else len(cfg.pools) for o in cfg.objectives)  # pool-free objectives once
    n = len(cfg.seeds) * len(cfg.graphs) * len(cfg.n_train) * len(cfg.init_steps) * per_pool * len(cfg.variants)
    assert n == 2 * 1 * 1 * 1 * 3 * 1
    assert len(rows) == n and (run / "sweep.csv").exists() and (run / "sweep_test_acc.png").exists()
    # per-group table: mean over the seeds of each group's points; curves: every eval of every point
    import csv

    table = list(csv.DictReader(open(run / "table.csv")))
    assert len(table) == n // len(cfg.seeds)
    for t in table:
        vals = [r["test_acc"] for r in rows if r["group"] == t["group"]]
        assert int(t["seeds"]) == len(vals) == 2
        assert float(t["test_acc_mean"]) == pytest.approx(sum(vals) / 2)
    curves = list(csv.DictReader(open(run / "curves.csv")))
    evals = sum(len(runio.read_jsonl(run / r["run_dir"] / "metrics.jsonl")) for r in rows)
    assert len(curves) == evals and {c["group"] for c in curves} == {r["group"] for r in rows}
    (run / "sweep_curves.png").unlink()
    assert cli.main(["figures", str(run)]) == 0 and (run / "sweep_curves.png").exists()  # offline, from curves.csv
    assert (run / "sweep_fig8.png").exists()  # Fig. 8 in both test metrics, against the SFT iteration
    # the SFT curves merge the runs' evaluations with `stargraph rescore`'s records, by step
    from stargraph.figures import _sft_curves

    sft_dir = sorted((run / "sft").iterdir())[0]
    logged = runio.read_jsonl(sft_dir / "metrics.jsonl")
    (sft_dir / "rescore.jsonl").write_text(json.dumps({"step": 10**6, "checkpoint": "x.pt", "test/acc": 0.25, "test/forced_token_acc": 0.5}) + "\n")
    fam, seed = sft_dir.name.rsplit("_s", 1)
    merged = _sft_curves(run)[fam][int(seed)]
    assert [r["step"] for r in merged] == sorted({r["step"] for r in logged} | {10**6})
    assert merged[-1]["test/forced_token_acc"] == 0.5
    # resume: delete one point, re-run: only that one is recomputed, the others are untouched
    victim = run / rows[0]["run_dir"]
    keep = run / rows[1]["run_dir"]
    stamp = (keep / "metrics.jsonl").stat().st_mtime_ns
    for p in sorted(victim.iterdir()):
        p.unlink()
    assert cli.main(args) == 0
    assert runio.is_done(victim) and (keep / "metrics.jsonl").stat().st_mtime_ns == stamp
    assert len(runio.read_jsonl(run / "points.jsonl")) == n


def test_throughput_benchmark_emits_json(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stargraph_throughput", REPO / "benchmarks" / "stargraph_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "bench.json"
    ntf = tmp_path / "ntf"
    assert mod.main(["--preset", "tiny", "--device", "cpu", "--threads", "1", "--steps", "2", "--warmup", "1",
                     "--eval-prompts", "64", "--out", str(out), "--export-ntf", str(ntf)]) == 0
    res = json.loads(out.read_text())
    for key in ("train_samples_per_s", "greedy_eval_prompts_per_s", "greedy_generate_prompts_per_s", "train_step_s"):
        assert res[key] > 0
    assert res["model"]["params"] > 0 and "python train.py" in res["ntf_command"]
    lines = (ntf / "deg_2_path_3_nodes_10_train_200000.txt").read_text().splitlines()
    assert len(lines) == 200 and "/" in lines[0] and "=" in lines[0]
    # --export-only writes the same files and times nothing.
    assert mod.main(["--preset", "tiny", "--device", "cpu", "--out", str(out), "--export-ntf", str(tmp_path / "only"), "--export-only"]) == 0
    assert (tmp_path / "only" / "deg_2_path_3_nodes_10_train_200000.txt").read_text().splitlines() == lines
    assert "train_samples_per_s" not in json.loads(out.read_text())


def test_sweep_only_keeps_the_matching_points(tmp_path):
    from stargraph.sweep import plan

    full = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={})
    _, all_points = plan(full, tmp_path)
    sel = [{"objective": "per_step_dpo", "pool": "fixed"}, {"objective": "sft", "init_step": 10}]
    cfg = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={"only": configlib.Sourced(sel, "test")})
    sft_tasks, points = plan(cfg, tmp_path)
    kept = {(i["objective"], i["pool"], i["seed"]) for _, i in points}
    assert kept == {("per_step_dpo", "fixed", s) for s in full.seeds} | {("sft", full.pools[0], s) for s in full.seeds}
    assert len(points) < len(all_points)
    # a selection that matches nothing of one seed drops that seed's SFT run too
    one = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={"only": configlib.Sourced([{"objective": "sft"}], "t"), "seeds": configlib.Sourced([0], "t")})
    assert len(plan(one, tmp_path)[0]) == 1
    with pytest.raises(ValueError, match="only"):
        resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={"only": configlib.Sourced([{"objectiv": "sft"}], "t")})


def test_a_mapping_set_changes_only_the_fields_it_names():
    tiny = resolve(TrainConfig, preset="tiny", config_file=None, overrides={}, preset_section="train")
    over = configlib.overrides_from_args(cli.build_parser().parse_args(["train", "--set", "sft={learning_rate: 0.01}"]))
    cfg = resolve(TrainConfig, preset="tiny", config_file=None, overrides=over, preset_section="train")
    assert cfg.sft.learning_rate == 0.01 and cfg.sft.max_steps == tiny.sft.max_steps and cfg.model == tiny.model
    over = configlib.overrides_from_args(cli.build_parser().parse_args(["train", "--set", "sft={}"]))
    assert resolve(TrainConfig, preset="tiny", config_file=None, overrides=over, preset_section="train") == tiny


def test_sweep_variant_mapping_values_merge_into_the_section():
    """A variant (or reproduce arm) written as {train.model: {n_layer: 1}} changes that field only."""
    from stargraph.sweep import plan

    cfg = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={})
    flat = replace(cfg, variants={"v": {"train.model.n_layer": 1}})
    nested = replace(cfg, variants={"v": {"train.model": {"n_layer": 1}}})
    (a, *_), _ = plan(flat, Path("/nonexistent"))
    (b, *_), _ = plan(nested, Path("/nonexistent"))
    assert a.cfg.model.n_layer == b.cfg.model.n_layer == 1 and b.cfg.model == a.cfg.model
    assert b.cfg.model.n_embd == cfg.train.model.n_embd


# ---------------------------------------------------------------- renamed fields (issue 13 item 4)

OLD_TO_NEW = {"lr": "learning_rate", "steps": "max_steps", "grad_clip": "max_grad_norm"}


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--set", "sft.lr=0.1"], "--set sft.lr: field 'sft.lr' was renamed to 'sft.learning_rate'"),
        (["train", "--sft.steps", "3"], "--sft.steps: field 'sft.steps' was renamed to 'sft.max_steps'"),
        (["posttrain", "--set", "grad_clip=1"], "--set grad_clip: field 'grad_clip' was renamed to 'max_grad_norm'"),
        (["reproduce", "--set", "posttrain={lr: 1}"], "field 'posttrain.lr' was renamed to 'posttrain.learning_rate'"),
        (["reproduce", "--set", "arms=[{name: a, init_step: 10, set: {lr: 0.1}}]"], "arm 'a': set key 'lr' was renamed to 'learning_rate'"),
        (["sweep", "--set", "variants={v: {posttrain.lr: 0.1}}"], "variant 'v': key 'posttrain.lr' was renamed to 'posttrain.learning_rate'"),
        (["sweep", "--set", "variants={v: {train.sft.steps: 5}}"], "key 'train.sft.steps' was renamed to 'train.sft.max_steps'"),
    ],
)
def test_old_field_names_are_rejected_with_the_new_name(argv, needle, capsys):
    preset = ["--preset", "tiny_sweep" if argv[0] == "sweep" else "tiny"]
    assert cli.main([*argv, *preset, "--print-config"]) == 2
    assert needle in capsys.readouterr().err


def test_an_old_name_in_a_config_file_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  sft:\n    max_steps: 5\n    lr: 0.01\n")
    assert cli.main(["train", "--preset", "tiny", "--config", str(f), "--print-config"]) == 2
    assert f"{f} line 4: field 'sft.lr' was renamed to 'sft.learning_rate'" in capsys.readouterr().err


def test_figures_read_a_reproduce_record_written_with_the_old_names(tmp_path):
    """``config.yaml`` of a run folder written before the rename (``lr:``, ``steps:``, an arm's ``set``)."""
    from stargraph.figures import load_reproduce

    cfg = resolve(ReproduceConfig, preset="tiny", config_file=None, overrides={})
    cfg.arms[0].set = {**cfg.arms[0].set, "learning_rate": 0.5}
    text = configlib.dump_yaml(cfg)
    for old, new in OLD_TO_NEW.items():
        text = text.replace(f" {new}:", f" {old}:").replace(f"{{{new}:", f"{{{old}:")
    assert "  lr:" in text and "  steps:" in text and "learning_rate" not in text and "max_steps" not in text
    (tmp_path / "config.yaml").write_text(text)
    again, _, _ = load_reproduce(tmp_path)
    assert again == cfg


def test_warmup_steps_below_one_is_a_fraction_of_the_steps():
    from stargraph.loop import lr_at

    for step in range(12):
        assert lr_at(step, lr=1.0, warmup=0.1, total=100) == lr_at(step, lr=1.0, warmup=10, total=100)
        assert lr_at(step, lr=1.0, warmup=0.05, total=90) == lr_at(step, lr=1.0, warmup=5, total=90)  # 4.5 -> 5
    assert lr_at(0, lr=1.0, warmup=0, total=10) == 1.0


def test_sweep_folder_tags_hash_the_old_names():
    from stargraph.sweep import _tag

    assert _tag({"sft.learning_rate": 0.1}) == _tag({"sft.lr": 0.1}) != _tag({"sft.learning_rate": 0.2})


def test_sweep_keeps_a_fresh_sft_control_beside_the_training_graph_one():
    """sft / sft_critical run once for all training-graph pools (same data) and once more for fresh pools,
    where they train on the fresh graphs (a different control)."""
    from stargraph.sweep import plan

    over = {"pools": configlib.Sourced(["resampled", "balanced", "fresh"], "test"), "objectives": configlib.Sourced(["sft", "per_step_dpo"], "test")}
    cfg = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides=over)
    _, points = plan(cfg, Path("/nonexistent"))
    per_seed = {(i["objective"], i["pool"]) for _, i in points if i["seed"] == cfg.seeds[0] and i["init_step"] == cfg.init_steps[0]}
    assert per_seed == {("sft", "resampled"), ("sft", "fresh"), ("per_step_dpo", "resampled"), ("per_step_dpo", "balanced"), ("per_step_dpo", "fresh")}
    fresh_only = resolve(SweepConfig, preset="tiny_sweep", config_file=None, overrides={"pools": configlib.Sourced(["fresh"], "test")})
    assert {i["pool"] for _, i in plan(fresh_only, Path("/nonexistent"))[1]} == {"fresh"}
