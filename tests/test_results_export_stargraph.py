"""docs/results/export_stargraph.py on a synthetic round-2 study folder: groups, seeds, last evaluations,
running points, SFT checkpoints, settings from old and renamed config fields, deterministic output; and the
committed stargraph_study2.json stays small and readable."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest
import yaml

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "docs" / "results" / "export_stargraph.py"
COMMITTED = REPO_ROOT / "docs" / "results" / "stargraph_study2.json"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("export_stargraph", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _evals(seed: int, acc_last: float, *, pref: bool, steps=(0, 50, 100)) -> list[dict]:
    out = []
    for s in steps:
        r = {"step": s, "init_step": 100, "test/acc": acc_last if s == steps[-1] else 0.05 + 0.3 * (s == 50),
             "train/acc": 0.1 * seed + s / 1000, "test/crit_acc": 0.25, "test/crit_prob": 0.2,
             "test/crit_p_other_child": 0.2, "test/crit_p_non_child": 0.6, "test/path_logp": -5.0 - seed,
             "test/forced_token_acc": 0.6, "train/crit_acc": 0.3}
        if s and pref:
            r.update({"train_pref_loss": 0.6 - s / 1000, "train_chosen_reward": -0.1, "train_rejected_reward": -0.5,
                      "train_loss": 0.6 - s / 1000, "pool/samples": 4096, "pool/sample_acc": 0.02 * s / 50,
                      "pool/pit_at_critical": 0.84, "pool/crit_pit_other_child": 0.16 + seed / 100})
        elif s:
            r["train_loss"] = 1.0 / s
        out.append(r)
    return out


def _point(root, name: str, recs: list[dict], cfg: dict, done: bool = True, torn: bool = False) -> None:
    d = root / "points" / name
    d.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in recs)
    (d / "metrics.jsonl").write_text(text + ('{"step": 150, "test/a' if torn else ""))
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    if done:
        (d / "DONE").write_text("{}")


def _study(tmp_path):
    study = tmp_path / "study2"
    sw = study / "strength"
    g = "g2-4-20_n2000_lr1e-3_b0.1_per_step_dpo_resampled_init100"
    for seed, acc in ((0, 0.1), (1, 0.2)):  # the renamed fields, as written after issue 13
        cfg = {"init": f"runs/study2/strength/sft/g2-4-20_n2000_base_s{seed}/ckpt_100.pt", "objective": "per_step_dpo",
               "learning_rate": 1e-3, "beta": 0.1, "max_steps": 100, "batch_size": 64, "construction": "full",
               "pool": {"policy": "resampled", "graphs": 1024, "arm_negatives": False}, "data": {"goals": "checkpoint"}}
        _point(sw, f"{g}_s{seed}", _evals(seed, acc, pref=True), cfg)
    _point(sw, f"{g}_s2", _evals(2, 0.9, pref=True, steps=(0, 50)), cfg, done=False, torn=True)  # still running
    c = "g2-4-20_n2000_lr1e-3_b0.1_sft_resampled_init100"
    old = {"init": "runs/study2/strength/sft/g2-4-20_n2000_base_s0/ckpt_100.pt", "objective": "sft", "lr": 1e-3,
           "beta": 0.1, "steps": 100, "pool": {"policy": "resampled"}}  # the names before the rename
    _point(sw, f"{c}_s0", _evals(0, 0.4, pref=False), old)
    for seed in (0, 1):
        d = sw / "sft" / f"g2-4-20_n2000_base_s{seed}"
        d.mkdir(parents=True)
        recs = [{"step": s, "test/acc": 0.05 * (s / 100) + seed / 100, "train/acc": s / 200, "test/crit_acc": 0.3} for s in (0, 100, 200)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (study / "metric").mkdir()  # a sweep that has not written any point yet: left out
    return study, g, c


def test_export_groups_seeds_last_evaluations_and_sft(ex, tmp_path):
    study, g, c = _study(tmp_path)
    out = ex.export(study)
    assert set(out["sweeps"]) == {"strength"}
    sw = out["sweeps"]["strength"]
    # the grid of the committed preset study2_strength: 40 groups x 3 seeds, of which 3 points have finished here
    assert sw["status"] == {"preset": "study2_strength", "planned_points": 120, "planned_groups": 40, "finished_points": 3, "complete": False}
    grp = sw["groups"][g]
    assert grp["seeds"] == [0, 1] and grp["running"] == {"2": 50}  # the running seed stays out of the statistics
    last = grp["last"]
    assert last["test/acc"]["values"] == [0.1, 0.2] and "values" not in last["train/acc"] and last["test/acc"]["mean"] == pytest.approx(0.15)
    assert last["test/acc"]["sd"] == pytest.approx(round(statistics.stdev([0.1, 0.2]), 3))
    assert last["test/path_logp"] == {"mean": -5.5, "sd": pytest.approx(0.71)}  # sd to 2 digits; no values
    assert last["train_pref_loss"]["mean"] == pytest.approx(0.5) and "train_loss" not in last
    assert grp["max_test_acc"]["values"] == [0.35, 0.35]  # a transient peak at step 50 is kept
    assert grp["max_test_forced_token_acc"] == {"mean": 0.6, "sd": 0.0}
    assert grp["first_pool"]["pool/sample_acc"]["mean"] == pytest.approx(0.02)  # the first pool, not the last
    assert grp["first_pool"]["pool/crit_pit_other_child"]["mean"] == pytest.approx(0.165)
    assert grp["settings"] == {"objective": "per_step_dpo", "variant": "lr1e-3_b0.1", "init_step": 100, "sft_group": "g2-4-20_n2000_base",
                               "lr": 1e-3, "beta": 0.1, "steps": 100, "batch_size": 64, "construction": "full", "pool": "resampled",
                               "pool_graphs": 1024, "arm_negatives": False, "goals": "checkpoint"}
    ctl = sw["groups"][c]
    assert ctl["seeds"] == [0] and ctl["last"]["test/acc"]["sd"] is None and ctl["last"]["train_loss"]["mean"] == 0.01
    assert ctl["settings"]["lr"] == 1e-3 and ctl["settings"]["steps"] == 100 and ctl["settings"]["variant"] == "lr1e-3_b0.1"
    assert "first_pool" not in ctl
    sft = sw["sft"]["g2-4-20_n2000_base"]
    assert sft["init_steps"] == [100] and sorted(sft["at_step"]) == ["100", "200"]  # the arms' start and the end
    assert sft["at_step"]["100"]["test/acc"]["values"] == [0.05, 0.06] and sft["done_seeds"] == []


def test_export_cli_is_deterministic_and_rerunnable(ex, tmp_path):
    study, g, _ = _study(tmp_path)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ex.main([str(study), "--out", str(a)])
    ex.main([str(study), "--out", str(b)])
    assert a.read_bytes() == b.read_bytes() and json.loads(a.read_text())["sweeps"]["strength"]["groups"][g]["seeds"] == [0, 1]
    # the running seed finishes, and a second sweep appears: a re-run picks both up
    (study / "strength" / "points" / f"{g}_s2" / "DONE").write_text("{}")
    recs = _evals(2, 0.3, pref=True)
    (study / "strength" / "points" / f"{g}_s2" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = yaml.safe_load((study / "strength" / "points" / f"{g}_s0" / "config.yaml").read_text())
    _point(study / "metric", "g2-4-20_n2000_base_per_step_dpo_resampled_init100_s0", _evals(0, 0.05, pref=True), cfg)
    ex.main([str(study), "--out", str(a)])
    out = json.loads(a.read_text())
    assert out["sweeps"]["strength"]["groups"][g]["seeds"] == [0, 1, 2] and out["sweeps"]["strength"]["groups"][g]["running"] == {}
    assert set(out["sweeps"]) == {"metric", "strength"}
    assert out["sweeps"]["metric"]["status"]["planned_points"] == 36 and not out["sweeps"]["metric"]["status"]["complete"]
    with pytest.raises(SystemExit, match="not a folder"):
        ex.main([str(tmp_path / "missing"), "--out", str(b)])


def test_committed_export_is_small_and_has_round_2(ex):
    assert COMMITTED.stat().st_size < 300_000  # five sweeps, about 41 kB each
    out = json.loads(COMMITTED.read_text())
    assert out["made_by"] == "python docs/results/export_stargraph.py runs/study2"
    strength = out["sweeps"]["strength"]
    assert len(strength["groups"]) == 40 and all(e["seeds"] == [0, 1, 2] for e in strength["groups"].values())
    assert strength["status"]["complete"] and strength["status"]["finished_points"] == 120
    assert ex.dumps(out) == COMMITTED.read_text()  # written by this script's formatter


def test_tables_print_one_row_per_arm_with_the_last_evaluation(ex, tmp_path, capsys):
    study, g, c = _study(tmp_path)
    for seed in (0, 1):  # a mixed family in the SFT runs and the points: its own column and SFT note
        d = study / "strength" / "sft" / f"g2-4-20_n2000_base_s{seed}"
        recs = [{"step": s, "test/acc": 0.1, "train/acc": 0.2, "test/crit_acc": 0.3, "test_l2/acc": 0.9 + seed / 100} for s in (0, 100, 200)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    for seed, acc in ((0, 0.1), (1, 0.2)):
        p = study / "strength" / "points" / f"{g}_s{seed}" / "metrics.jsonl"
        p.write_text("".join(json.dumps({**r, "test_l2/acc": 0.5}) + "\n" for r in _evals(seed, acc, pref=True)))
    out = tmp_path / "o.json"
    ex.main([str(study), "--out", str(out)])
    spec = importlib.util.spec_from_file_location("stargraph_tables", SCRIPT.with_name("stargraph_tables.py"))
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    tables.main(["strength", "--json", str(out)])
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| arm")]
    assert [r.split(" | ")[0] for r in rows] == ["| continued SFT (control)", "| per-step DPO"]
    dpo = rows[1].split(" | ")
    assert dpo[2] == "2" and dpo[4] == "0.150 ± 0.071" and dpo[-1] == "0.350 |"  # last evaluation's mean ± sd; max at any eval
    assert "test acc G(2,2,20)" in text and "SFT at step 100 (2 seeds)" in text and "test_l2 0.905 ± 0.007" in text
    assert "first pools from step 100: sample acc 0.02" in text


def test_export_keeps_the_sweeps_it_has_no_run_folders_for(ex, tmp_path, capsys):
    study, g, _ = _study(tmp_path)
    out = tmp_path / "o.json"
    out.write_text(json.dumps({"sweeps": {"old": {"status": {"complete": True}, "groups": {}, "sft": {}},
                                          "strength": {"status": {}, "groups": {"stale": {}}, "sft": {}}}}))
    ex.main([str(study), "--out", str(out)])
    got = json.loads(out.read_text())["sweeps"]
    assert set(got) == {"old", "strength"} and got["old"]["status"] == {"complete": True}  # kept as it was
    assert "stale" not in got["strength"]["groups"] and g in got["strength"]["groups"]      # re-exported from its folders
    assert "kept from the existing file (no run folder here): old" in capsys.readouterr().out
    ex.main([str(study), "--out", str(out), "--replace"])
    assert set(json.loads(out.read_text())["sweeps"]) == {"strength"}
