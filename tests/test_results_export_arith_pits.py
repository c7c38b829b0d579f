"""docs/results/export_arith_pits.py --merge: a new pilot is added to the committed JSON without losing the earlier
pilots (whose run folders are gone), a pilot measured again replaces its entry, and notes merge key by key."""

from __future__ import annotations

import importlib.util
import json

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "docs" / "results" / "export_arith_pits.py"
COMMITTED = REPO_ROOT / "docs" / "results" / "arith_pit_pilot.json"


def _ex():
    spec = importlib.util.spec_from_file_location("export_arith_pits", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pilot(size: int, steps: int, hit: float, temperature: float | None = None, seed: int = 0) -> dict:
    probe = {"questions": 2000, "samples_per_question": 8}
    if temperature is not None:           # earlier pilots carry no temperature: the preset's 0.7
        probe["sample_temperature"] = temperature
    return {"dsyn_size": size, "pool": 20000, "seed": seed, "sft": {"optimizer_steps": steps},
            "probe": probe, "pit_truth": {"hit_rate": hit}}


def test_merge_keeps_old_pilots_and_merges_notes():
    ex = _ex()
    old = {"what": "old", "date": "d0", "made_by": "cmd0", "reference_study_point": {"pit_breakdowns": 1},
           "pilots": [_pilot(10000, 600, 0.55), _pilot(20000, 600, 0.56)],
           "commands": {"a": "x"}, "findings": ["f1"], "design": "one"}
    new = {"what": "new", "date": "d1", "made_by": "cmd1", "reference_study_point": {"greedy_test_accuracy": 0.45},
           "pilots": [_pilot(2000, 1200, 0.6), _pilot(20000, 600, 0.57)],
           "commands": {"b": "y"}, "findings": ["f1", "f2"], "design_more": "two"}
    out = ex.merge(old, new)
    assert [(p["dsyn_size"], p["pit_truth"]["hit_rate"]) for p in out["pilots"]] == [(10000, 0.55), (2000, 0.6), (20000, 0.57)]
    assert out["reference_study_point"] == {"pit_breakdowns": 1}  # kept: the new run brought no breakdowns
    assert out["made_by"] == ["cmd0", "cmd1"] and out["what"] == "new" and out["date"] == "d1"
    assert out["commands"] == {"a": "x", "b": "y"} and out["findings"] == ["f1", "f2"]
    assert out["design"] == "one" and out["design_more"] == "two"
    # another sampling temperature or seed is another pilot; the same temperature written out replaces its match
    out2 = ex.merge(out, {**new, "pilots": [_pilot(2000, 1200, 0.93, temperature=1.0), _pilot(2000, 1200, 0.9, 1.0, seed=1),
                                            _pilot(20000, 600, 0.58, temperature=0.7)]})
    assert [(p["dsyn_size"], p["seed"], p["probe"].get("sample_temperature"), p["pit_truth"]["hit_rate"]) for p in out2["pilots"]] == [
        (10000, 0, None, 0.55), (2000, 0, None, 0.6), (2000, 0, 1.0, 0.93), (2000, 1, 1.0, 0.9), (20000, 0, 0.7, 0.58)]


def test_committed_json_keeps_every_pilot():
    pilots = json.loads(COMMITTED.read_text())["pilots"]
    keys = [(p["dsyn_size"], p["pool"], p["sft"]["optimizer_steps"], p["seed"], p["probe"].get("sample_temperature", 0.7))
            for p in pilots]
    assert (10000, 20000, 600, 0, 0.7) in keys and (20000, 20000, 600, 0, 0.7) in keys and len(set(keys)) == len(keys)
