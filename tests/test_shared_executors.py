"""shared.executors without Ray: retries then a report, dependencies, a dead worker process, Ctrl-C, and
the fault-injection hook the cluster tests rely on."""

from __future__ import annotations

import pytest

from shared.executors import InjectedFault, InlineBackend, Job, JobsFailed, ProcessBackend, maybe_inject_fault, run_jobs

F = maybe_inject_fault  # a module-level function: fails while $STEPCREDIT_INJECT_FAULTS says so, else returns None


def _job(key, folder, after=()):
    return Job(key, F, (key, str(folder / key)), after=after)


def test_retries_then_success_and_failure_reported_with_its_dependants(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "flaky:2,broken:9")
    jobs = [_job("flaky", tmp_path), _job("broken", tmp_path), _job("needs-broken", tmp_path, after=("broken",)), _job("fine", tmp_path)]
    log: list[str] = []
    outs = {o.key: o for o in run_jobs(jobs, InlineBackend(), retries=2, log=log.append)}
    assert outs["flaky"].ok and outs["flaky"].attempts == 3 and outs["fine"].attempts == 1
    assert not outs["broken"].ok and outs["broken"].attempts == 3 and "InjectedFault" in outs["broken"].error
    assert not outs["needs-broken"].ok and outs["needs-broken"].attempts == 0 and "'broken'" in outs["needs-broken"].error
    assert sum("retrying" in m for m in log) == 4
    err = str(JobsFailed([outs["broken"], outs["needs-broken"]]))
    assert "2 job(s) failed" in err and "broken: 3 attempt(s)" in err


def test_a_dependency_runs_first_and_unknown_dependencies_count_as_done(tmp_path):
    order: list[str] = []
    jobs = [Job("b", order.append, ("b",), after=("a",)), Job("a", order.append, ("a",)), Job("c", order.append, ("c",), after=("gone",))]
    assert all(o.ok for o in run_jobs(jobs, InlineBackend()))
    assert order.index("a") < order.index("b") and "c" in order
    with pytest.raises(ValueError, match="unique"):
        run_jobs([jobs[0], jobs[0]], InlineBackend())


def test_a_killed_worker_process_is_replaced_and_its_job_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "dies:1:exit")
    backend = ProcessBackend(2)
    try:
        outs = {o.key: o for o in run_jobs([_job("dies", tmp_path), _job("lives", tmp_path)], backend, retries=1, log=lambda m: None)}
    finally:
        backend.close()
    assert outs["dies"].ok and outs["dies"].attempts == 2
    assert outs["lives"].ok
    assert len((tmp_path / "dies" / ".injected_faults").read_text().splitlines()) == 1


def test_ctrl_c_cancels_the_jobs_in_flight_and_propagates(tmp_path):
    cancelled: list = []

    class Backend(InlineBackend):
        def cancel(self, handles):
            cancelled.extend(handles)

    def interrupt():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_jobs([Job("a", interrupt), Job("b", interrupt)], Backend(), retries=3, log=lambda m: None)
    assert len(cancelled) == 1  # the job in flight; "b" never started


def test_fault_injection_counts_attempts_in_the_marker_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPCREDIT_INJECT_FAULTS", "x:2")
    for _ in range(2):
        with pytest.raises(InjectedFault):
            maybe_inject_fault("job-x", tmp_path)
    maybe_inject_fault("job-x", tmp_path)  # the third attempt runs
    maybe_inject_fault("other", tmp_path)
    assert len((tmp_path / ".injected_faults").read_text().splitlines()) == 2


def test_the_ray_executor_without_ray_is_a_clear_config_error(tmp_path, monkeypatch, capsys):
    import sys

    from mathreason.cli import main as mathreason_main
    from stargraph import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    monkeypatch.setenv("STEPCREDIT_CACHE", str(tmp_path / "cache"))
    assert cli.main(["sweep", str(tmp_path / "sweep"), "--preset", "tiny_sweep", "--executor", "ray"]) == 2
    assert "field executor: ray needs Ray" in capsys.readouterr().err
    assert not list((tmp_path / "sweep").glob("*/*/DONE"))
    assert mathreason_main(["scaling", "--preset", "tiny", "--set", f"run_dir={tmp_path / 'study'}", "--set", "scaling.sizes=[6]", "--set", "scaling.executor=ray", "--quiet"]) == 2
    assert "need Ray" in capsys.readouterr().err
