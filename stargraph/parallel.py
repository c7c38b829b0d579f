"""Run SFT and post-training tasks on an executor: this process, a pool of local worker processes, or Ray.

A :class:`Task` is one run folder. :class:`Runner` turns tasks into :class:`shared.executors.Job` objects
and hands them to :func:`shared.executors.run_jobs` with a backend:

* ``executor: local``, ``workers: 1``: every task in this process, one after another;
* ``executor: local``, ``workers: N``: a pool of N spawned processes, each pinned to cores / N torch
  threads (:class:`shared.executors.ProcessBackend`);
* ``executor: ray``: one Ray task per run folder, reserving ``ray.cpus_per_task`` CPUs (its torch
  threads) and ``ray.gpus_per_task`` GPUs (:class:`shared.executors.RayBackend`).

A task whose folder is complete (``DONE``) is skipped, so a killed batch resumes where it stopped; a
failed task is retried ``retries`` times and then reported (:class:`shared.executors.JobsFailed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from shared.executors import EXECUTORS, InlineBackend, Job, JobsFailed, Outcome, ProcessBackend, RayConfig, cpu_count, maybe_inject_fault, run_jobs

from .config import PostTrainConfig, TrainConfig

__all__ = ["Runner", "Task", "cpu_count", "run_task", "run_tasks", "threads_per_worker"]


@dataclass
class Task:
    kind: str  # "sft" | "posttrain"
    cfg: Any
    run_dir: str
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.run_dir


def threads_per_worker(workers: int) -> int:
    return max(1, cpu_count() // max(1, workers))


def _file_logger(run_dir: str, label: str, echo: bool) -> Callable[[str], None]:
    path = Path(run_dir) / "log.txt"
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {label} {msg}"
        with open(path, "a") as f:
            f.write(line + "\n")
        if echo:
            print(line, flush=True)

    return log


def run_task(task: Task, threads: int = 0, echo: bool = True, tracking: Any = None) -> tuple[str, dict, float]:
    """Run one task here; returns (run_dir, final metrics record, wall seconds).

    ``tracking`` (a :class:`shared.tracking.TrackingConfig`) mirrors the run's ``metrics.jsonl`` into an
    experiment tracker while it runs (:func:`stargraph.tracking.mirrored`)."""
    from .posttrain import posttrain
    from .train import train_sft

    maybe_inject_fault(task.key, task.run_dir)
    cfg = task.cfg
    if threads > 0:
        cfg = replace(cfg, runtime=replace(cfg.runtime, threads=threads))
    log = _file_logger(task.run_dir, task.label, echo)
    t0 = time.perf_counter()
    from .tracking import mirrored

    with mirrored(tracking, task.run_dir, task.key, cfg):
        if task.kind == "sft":
            assert isinstance(cfg, TrainConfig)
            rec = train_sft(cfg, task.run_dir, log=log)
        elif task.kind == "posttrain":
            assert isinstance(cfg, PostTrainConfig)
            rec = posttrain(cfg, task.run_dir, log=log)
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
    return task.run_dir, rec, time.perf_counter() - t0


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclass
class Runner:
    """Runs batches of tasks on one executor; complete task folders are skipped.

    With ``executor: local`` and ``workers > 1``, one pool of spawned worker processes is created on first
    need and reused for every batch (a batch with a single task to run stays in this process).
    """

    workers: int = 1
    echo: bool = True
    executor: str = "local"
    ray: RayConfig = field(default_factory=RayConfig)
    retries: int = 0
    tracking: Any = None
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.executor!r}")
        self.workers = max(1, int(self.workers))
        self._backend = None
        self.outcomes: list[Outcome] = []

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # ---------------------------------------------------------------- jobs

    def _get_backend(self):
        if self._backend is None:
            if self.executor == "ray":
                from shared.executors import RayBackend

                self._backend = RayBackend(self.ray, log=self.log, needs="field executor: ray needs")
            elif self.workers > 1:
                self._backend = ProcessBackend(self.workers, _init_worker, (threads_per_worker(self.workers),))
        return self._backend

    def _job(self, task: Task, threads: int, after: tuple[str, ...] = ()) -> Job:
        if self.executor == "ray":
            threads = max(1, int(self.ray.cpus_per_task))
            return Job(task.key, run_task, (task, threads, self.echo, self.tracking), cpus=self.ray.cpus_per_task, gpus=self.ray.gpus_per_task, after=after)
        return Job(task.key, run_task, (task, threads, self.echo, self.tracking), after=after)

    def _run(self, jobs: list[Job], inline: bool) -> dict[str, Outcome]:
        if not jobs:  # nothing to run: no pool, no Ray
            return {}
        backend = InlineBackend() if inline and self.executor == "local" else self._get_backend()
        outs = run_jobs(jobs, backend, retries=self.retries, log=self.log)
        self.outcomes += outs
        failed = [o for o in outs if not o.ok]
        if failed:
            raise JobsFailed(failed)
        return {o.key: o for o in outs}

    def run(self, tasks: Sequence[Task]) -> list[tuple[str, dict, float]]:
        """Run independent tasks; returns (run_dir, final record, seconds) of those run, in task order."""
        from .runio import is_done

        todo = [t for t in tasks if not is_done(Path(t.run_dir))]
        if self.executor == "local" and (self.workers <= 1 or len(todo) <= 1):
            threads = 0 if self.workers <= 1 else cpu_count()  # a lone task gets every core of the pool
            res = self._run([self._job(t, threads) for t in todo], inline=True)
        else:
            res = self._run([self._job(t, threads_per_worker(self.workers)) for t in todo], inline=False)
        return [res[t.key].value for t in todo]

    def run_staged(self, first: Sequence[Task], then: Sequence[Sequence[Task]]) -> tuple[list, list]:
        """Run ``first[i]`` and, as soon as it is complete, the tasks ``then[i]`` that need it.

        Keeps every worker busy when the first tasks outnumber the workers unevenly (e.g. three
        seeds' SFT runs on two workers). Returns (results of ``first``, results of ``then``) for the tasks
        run, in finishing order; raises :class:`JobsFailed` after the others finished if any failed.
        """
        from .runio import is_done

        if len(first) != len(then):
            raise ValueError("run_staged: one list of dependent tasks per first task")
        if self.executor == "local" and self.workers <= 1:
            a = self.run(first)
            b = self.run([t for group in then for t in group])
            return a, b
        threads = threads_per_worker(self.workers)
        todo_first = [t for t in first if not is_done(Path(t.run_dir))]
        # fewer first tasks than workers: give each of them the idle workers' cores
        first_threads = max(threads, cpu_count() // max(1, min(self.workers, len(todo_first))))
        jobs, kinds = [], {}
        for t, group in zip(first, then):
            dep: tuple[str, ...] = ()
            if not is_done(Path(t.run_dir)):
                jobs.append(self._job(t, first_threads))
                kinds[t.key] = 0
                dep = (t.key,)
            for d in group:
                if not is_done(Path(d.run_dir)):
                    jobs.append(self._job(d, threads, after=dep))
                    kinds[d.key] = 1
        if not jobs:  # nothing to run: no pool, no Ray
            return [], []
        outs = run_jobs(jobs, self._get_backend(), retries=self.retries, log=self.log)
        self.outcomes += outs
        res: tuple[list, list] = ([], [])
        for o in outs:
            if o.ok:
                res[kinds[o.key]].append(o.value)
        failed = [o for o in outs if not o.ok]
        if failed:
            raise JobsFailed(failed)
        return res


def run_tasks(tasks: Sequence[Task], workers: int, echo: bool = True) -> list[tuple[str, dict, float]]:
    """Run independent tasks with ``workers`` processes (1 = in this process); done ones are skipped."""
    with Runner(workers, echo) as r:
        return r.run(tasks)
