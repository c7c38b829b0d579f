"""``scripts/gpu_check.sh`` on a CPU machine: the quick run writes valid JSON in which every part has a status
(the CUDA parts skipped with the reason), a time-boxed part is recorded as a timeout while the check goes
on, and the helper's parsers turn each part's outputs (JUnit XML, benchmark JSON, run folders) into numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.sh"
STATUSES = {"ok", "partial", "failed", "timeout", "skipped", "not_run"}


def _helper():
    spec = importlib.util.spec_from_file_location("gpu_check_helper", REPO_ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _helper()


def _strict_json(path: Path) -> dict:
    def bad(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=bad)


def _run_check(tmp_path: Path, extra_env: dict, timeout: float = 150) -> tuple[subprocess.CompletedProcess, dict]:
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and GNU timeout")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"), GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_QUICK="1")
    env.update(extra_env)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = _strict_json(tmp_path / "out" / "gpu_check.json")
    assert (tmp_path / "out" / "gpu_check_logs.txt").exists()
    return proc, report


def _no_cuda() -> bool:
    try:
        import torch

        return not torch.cuda.is_available()
    except Exception:
        return True


ON_GPU = pytest.mark.skipif(not _no_cuda(), reason="on a GPU machine the quick check runs every part; run it by hand there")


@pytest.mark.slow
@ON_GPU
def test_quick_check_on_cpu_writes_valid_json_with_every_part(tmp_path):
    t0 = time.perf_counter()
    proc, rep = _run_check(tmp_path, {})
    assert time.perf_counter() - t0 < 120
    assert rep["schema"] == gc.SCHEMA and rep["quick"] == 1 and rep["finished_utc"]
    assert rep["parts_order"] == list(rep["parts"])
    for name, part in rep["parts"].items():
        assert part["status"] in STATUSES, (name, part)
    assert rep["parts"]["setup"]["status"] == "ok" and rep["parts"]["setup"]["python"] == sys.executable
    assert rep["parts"]["facts"]["status"] == "ok"
    py = rep["facts"]["python"]
    assert py["cuda_available"] is False and py["torch"] and py["vllm_usable"] is False
    for name in ("pytest_gpu", "sampling_throughput", "pipeline_tiny", "stargraph_throughput", "stargraph_paper_cut"):
        assert rep["parts"][name]["status"] == "skipped" and "CUDA" in rep["parts"][name]["reason"]
    assert rep["summary"]["status"] == {k: v["status"] for k, v in rep["parts"].items()}
    assert "[gpu_check] summary:" in proc.stdout


@pytest.mark.slow
@ON_GPU
def test_a_part_over_its_time_box_is_recorded_as_timeout_and_the_check_goes_on(tmp_path):
    # The paper preset's cut reproduce cannot finish in 5 s on a CPU: it is killed, recorded, and the
    # report is still completed (the parts not selected are skipped, none is left pending).
    env = {"GPU_CHECK_ALLOW_CPU": "1", "GPU_CHECK_ONLY": "stargraph_paper_cut", "GPU_CHECK_T_STARGRAPH_PAPER_CUT": "5"}
    proc, rep = _run_check(tmp_path, env)
    part = rep["parts"]["stargraph_paper_cut"]
    assert part["status"] == "timeout", part
    assert part["rc"] in (124, 137) and 4.5 <= part["wall_s"] < 30 and part["timeout_s"] == 5
    assert part["tail"] is not None and "reproduce" in part["command"]
    assert part["numbers"]["completed"] is False and "train.sft.max_steps=" in " ".join(part["numbers"]["overrides"])
    assert rep["parts"]["facts"]["status"] == "ok"  # always recorded: the CUDA gate reads it
    for name in ("pytest_gpu", "sampling_throughput", "pipeline_tiny", "stargraph_throughput"):
        assert rep["parts"][name]["status"] == "skipped" and "not selected" in rep["parts"][name]["reason"]
    assert "stargraph_paper_cut (exit" in (tmp_path / "out" / "gpu_check_logs.txt").read_text()


# ---------------------------------------------------------------- the helper's record keeping and parsers


def test_init_record_finish_keep_every_part_with_a_status(tmp_path):
    js = tmp_path / "r.json"
    gc.main(["init", "--json", str(js), "--parts", "a,b,c", "--meta", "quick=0"])
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    gc.main(["record", "--json", str(js), "--part", "a", "--rc", "124", "--wall", "10.0", "--timeout", "10", "--log", str(log)])
    gc.main(["record", "--json", str(js), "--part", "b", "--status", "skipped", "--reason", "needs CUDA"])
    rep = _strict_json(js)
    assert rep["parts"]["a"]["status"] == "timeout" and rep["parts"]["a"]["tail"][-1] == "line 99"
    assert len(rep["parts"]["a"]["tail"]) == gc.TAIL_LINES and rep["parts"]["c"]["status"] == "pending"
    gc.main(["record", "--json", str(js), "--part", "b", "--rc", "3", "--wall", "1", "--timeout", "10", "--log", str(log)])
    gc.main(["finish", "--json", str(js)])
    rep = _strict_json(js)
    assert [rep["parts"][p]["status"] for p in "abc"] == ["timeout", "failed", "not_run"]
    assert rep["total_wall_s"] >= 0 and rep["summary"]["status"]["c"] == "not_run"


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5" time="12.5">
<testcase classname="tests.test_a" name="test_ok" time="1"/>
<testcase classname="tests.test_a" name="test_gpu" time="0"><skipped type="pytest.skip" message="needs a CUDA GPU">x</skipped></testcase>
<testcase classname="tests.test_b" name="test_bad" time="1"><failure message="assert 1 == 2">tb</failure></testcase>
<testcase classname="tests.test_b" name="test_ok2" time="1"/>
<testcase classname="" name="tests.test_c"><error message="collection failure">ImportError</error></testcase>
</testsuite></testsuites>"""


def test_parse_pytest_from_junit_and_from_a_killed_runs_log(tmp_path):
    xml = tmp_path / "p.xml"
    xml.write_text(JUNIT)
    log = tmp_path / "p.log"
    log.write_text("=== 2 passed, 1 failed, 1 skipped, 700 deselected, 1 error in 12.50s ===\n")
    n = gc.parse_pytest(str(log), str(xml))
    assert (n["passed"], n["failed"], n["skipped"], n["errors"], n["deselected"]) == (2, 1, 1, 1, 700)
    assert n["collection_errors"] == ["tests.test_c"] and n["failures"][0]["test"] == "tests/test_b.py::test_bad"
    assert gc.pytest_status(n, 1)[0] == "failed"
    assert n["skipped_reasons"] == {"needs a CUDA GPU": 1} and n["time_s"] == 12.5
    # killed: no XML, only the -v lines printed so far
    log.write_text("tests/test_a.py::test_ok PASSED   [ 50%]\ntests/test_a.py::test_gpu SKIPPED (needs CUDA) [100%]\n")
    n = gc.parse_pytest(str(log), str(tmp_path / "missing.xml"))
    assert (n["source"], n["passed"], n["skipped"], n["failed"]) == ("log", 1, 1, 0)
    assert gc.pytest_status(n, 124)[0] == "ok"
    assert gc.pytest_status({"passed": 0, "failed": 0, "errors": 0, "skipped": 2, "skipped_reasons": {"x": 2}}, 1)[0] == "skipped"


def test_parse_sampling_reports_tokens_per_second_per_backend(tmp_path):
    rep = {"model": "tiny", "prompts": 4, "results": [
        {"backend": "transformers", "tokens_per_s": 100.0, "seconds": 2.0, "generated_tokens": 200, "sequences": 8},
        {"backend": "vllm", "tokens_per_s": 2500.0, "seconds": 0.1, "generated_tokens": 250, "sequences": 8}]}
    p = tmp_path / "s.json"
    p.write_text(json.dumps(rep))
    n = gc.parse_sampling(str(p))
    assert n["tokens_per_s"] == {"transformers": 100.0, "vllm": 2500.0} and n["vllm_over_transformers"] == 25.0
    rep["results"][1] = {"backend": "vllm", "skipped": "not available here"}
    p.write_text(json.dumps(rep))
    js = tmp_path / "r.json"
    gc.main(["init", "--json", str(js), "--parts", "sampling_throughput"])
    gc.main(["record", "--json", str(js), "--part", "sampling_throughput", "--rc", "0", "--wall", "3", "--timeout", "60",
             "--parse", "sampling", "--artifact", str(p)])
    part = _strict_json(js)["parts"]["sampling_throughput"]
    assert part["status"] == "partial" and "vllm" in part["notes"][0]
    assert gc.parse_sampling(str(tmp_path / "absent.json")) is None
    # one report per backend in a folder (the check's layout): merged, transformers first
    d = tmp_path / "per_backend"
    d.mkdir()
    (d / "vllm.json").write_text(json.dumps({"model": "tiny", "results": [{"backend": "vllm", "tokens_per_s": 900.0}]}))
    n = gc.parse_sampling(str(d))
    assert n["tokens_per_s"] == {"vllm": 900.0} and "vllm_over_transformers" not in n
    (d / "transformers.json").write_text(json.dumps({"model": "tiny", "results": [{"backend": "transformers", "tokens_per_s": 300.0}]}))
    n = gc.parse_sampling(str(d))
    assert list(n["backends"]) == ["transformers", "vllm"] and n["vllm_over_transformers"] == 3.0


def _stage(root: Path, name: str, status: str, summary: dict | None = None, started: float = 1.0, inputs: dict | None = None):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    rec = {"stage": name, "status": status, "key": "k", "inputs": inputs or {}, "outputs": {}, "summary": summary or {},
           "started": started, "finished": started + 2 if status == "done" else None}
    (d / "stage.json").write_text(json.dumps(rec))


def test_parse_pipeline_reads_stage_records_of_a_killed_run(tmp_path):
    root = tmp_path / "run"
    _stage(root, "sft", "done", {"seconds": 5.0}, 1)
    _stage(root, "sample", "done", {"seconds": 3.0, "backend": "vllm", "rows": 64}, 2)
    _stage(root, "grade", "done", {"seconds": 1.0}, 3)
    _stage(root, "advantages", "done", {"seconds": 4.0, "backend": "vllm"}, 4)
    _stage(root, "pairs", "done", {"seconds": 0.1}, 5)
    _stage(root, "pref/per_step_dpo", "done", {"seconds": 2.0}, 6)
    _stage(root, "pref/dpo", "running", {}, time.time() - 7)
    n = gc.parse_pipeline(str(root), None)
    assert list(n["stages"])[:2] == ["sft", "sample"]
    assert n["stages"]["pref/dpo"]["status"] == "interrupted" and 6 <= n["stages"]["pref/dpo"]["seconds"] < 60
    assert n["backends_recorded"] == {"sample": "vllm", "advantages": "vllm"} and n["part2_complete"] is False
    _stage(root, "pref/dpo", "done", {"seconds": 2.0}, 7)
    _stage(root, "eval", "done", {"seconds": 9.0}, 8, inputs={"backend": "vllm"})
    n = gc.parse_pipeline(str(root), None)
    assert n["part2_complete"] is True and n["stages"]["eval"]["backend"] == "vllm"
    assert n["stage_seconds_total"] == 26.1


def test_parse_sg_cut_extrapolates_from_measured_step_rates(tmp_path):
    root = tmp_path / "sg"
    plan = {"description": "cut", "sets": [], "full_sft_steps": 6000, "full_post_steps": 600, "cut_sft_steps": 600,
            "cut_post_steps": 100, "seeds": [0], "arms": ["a1", "a2"], "workers": 2, "target_s": 300}
    (tmp_path / "plan.json").write_text(json.dumps(plan))

    def task(d: Path, steps: int, rate: float, startup: float, done: bool = True):
        d.mkdir(parents=True)
        rows = [{"step": s, "time_s": startup + rate * s, "test/acc": float("nan")} for s in range(0, steps + 1, 50)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if done:
            (d / "DONE").write_text(json.dumps({"time_s": startup + rate * steps}))

    task(root / "seed_0" / "sft", 600, 0.01, 2.0)
    task(root / "seed_0" / "arms" / "a1", 100, 0.05, 1.0)
    task(root / "seed_0" / "arms" / "a2", 100, 0.05, 1.0)
    (root / "summary.json").write_text(json.dumps({"total_time_s": 20.0}))
    n = gc.parse_sg_cut(str(root), str(tmp_path / "plan.json"), 25.0)
    assert n["completed"] and n["sft_tasks_done"] == 1 and n["arm_tasks_done"] == 2
    assert n["sft_s_per_step_mean"] == pytest.approx(0.01) and n["arm_s_per_step_mean"] == pytest.approx(0.05)
    # 25 s measured + 5400 extra SFT steps x 0.01 + 2 arms x 500 extra steps x 0.05 / 2 workers
    assert n["estimated_full_preset_s"] == pytest.approx(25 + 54 + 25)
    assert n["estimated_within_target"] is True
    # killed during SFT: the SFT phase is extrapolated, the total is unknown
    (root / "summary.json").unlink()
    shutil.rmtree(root / "seed_0" / "arms")
    (root / "seed_0" / "sft" / "DONE").unlink()
    n = gc.parse_sg_cut(str(root), str(tmp_path / "plan.json"), 150.0)
    assert n["completed"] is False and n["estimated_full_preset_s"] is None
    assert n["estimate_sft_phase_s"] == pytest.approx(2.0 + 0.01 * 6000)
