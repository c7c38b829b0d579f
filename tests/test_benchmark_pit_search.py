"""benchmarks/pit_search.py on a very small scripted config (a few seconds): the report's structure and the
consistency of its numbers (rollout accounting, agreement rates, linear == all pits under best-of-K, and
exact pits on the planted step when every clean prefix succeeds and nothing recovers)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def _bench():
    spec = importlib.util.spec_from_file_location("pit_search", REPO / "benchmarks" / "pit_search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pit_search_report_on_a_small_scripted_config(tmp_path, capsys):
    K, lengths = 3, [2, 5, 9, 13]
    out = tmp_path / "pit.json"
    report = _bench().main([
        "--sources", "scripted", "--lengths", ",".join(map(str, lengths)), "--per-length", "6", "--k", str(K),
        "--p", "1.0", "--recovery", "0,0.3", "--threads", "1", "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert json.loads(printed) == report == json.loads(out.read_text())
    assert {"config", "machine", "sources", "headline", "conclusion"} <= set(report)
    assert isinstance(report["conclusion"], str) and "bisect/linear" in report["conclusion"]
    assert report["machine"]["torch_threads"] == 1

    runs = report["sources"]["scripted"]["runs"]
    assert [r["recovery"] for r in runs] == [0.0, 0.3]
    buckets = ["1-3", "4-7", "8-11", "12+"]
    for run in runs:
        n = run["negatives"]
        assert n == 6 * len(lengths) and run["negatives_by_bucket"] == {b: 6 for b in buckets}
        s = run["schedules"]
        assert set(s) == {"linear", "bisect", "all"}
        for name, r in s.items():
            assert r["rollouts_generated"] == r["unique_prefixes"] * K
            assert r["pits_found"] <= n and 0.0 <= r["pit_is_planted_step"] <= 1.0
            assert list(r["by_bucket"]) == buckets
            # No prefix is shared across the scripted questions: the buckets add up to the whole.
            assert sum(b["rollouts"] for b in r["by_bucket"].values()) == r["rollouts_generated"]
            assert sum(b["responses"] for b in r["by_bucket"].values()) == n
        # all values every prefix: V + S - 1 per response.
        assert s["all"]["rollouts_generated"] == K * sum(6 * L for L in lengths) == K * n + K * sum(6 * (L - 1) for L in lengths)
        assert s["all"]["rollouts_generated"] >= s["linear"]["rollouts_generated"]
        assert s["all"]["rounds"] == 1 and s["linear"]["rounds"] <= max(lengths) - 1
        assert s["bisect"]["rounds"] <= math.ceil(math.log2(max(lengths) + 1))
        assert run["linear_pits_equal_all_pits"] is True
        cmp_ = run["comparison"]
        for pair in ("bisect_vs_linear", "linear_vs_all"):
            for a in [cmp_[pair]["overall"], *cmp_[pair]["by_bucket"].values()]:
                assert 0.0 <= a["agreement_rate"] <= 1.0
                assert a["same_pit"] + a["pit_only_first"] + a["pit_only_second"] + a["both_pit_different_step"] == a["negatives"]
        assert cmp_["linear_vs_all"]["overall"]["agreement_rate"] == 1.0
        long = cmp_["bisect_over_linear_rollouts"]["steps_8_plus"]
        assert long["negatives"] == 12 and long["ratio"] == round(long["bisect_rollouts"] / long["linear_rollouts"], 4)
        assert long["met"] == (long["ratio"] <= 0.5) and long["target"] == "<= 0.5"

    # p = 1 and no recovery: Q is exactly 1 before the planted step and 0 from it; every schedule finds it.
    mono = runs[0]
    assert all(r["pit_is_planted_step"] == 1.0 for r in mono["schedules"].values())
    assert mono["comparison"]["bisect_vs_linear"]["overall"]["agreement_rate"] == 1.0
    diag = mono["q_diagnostics_from_all"]
    assert diag == {"negatives_with_recovery_after_a_zero": 0, "negatives_with_a_false_zero_before_the_planted_step": 0}
    head = mono["comparison"]["bisect_over_linear_rollouts"]["steps_8_plus"]
    assert report["headline"]["recovery"] == 0.0 and report["headline"]["ratio"] == head["ratio"]
