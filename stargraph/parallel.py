"""Run SFT and post-training tasks in this process or in a pool of worker processes.

Each worker pins ``torch.set_num_threads(threads)`` (cores divided among workers) before it runs
anything.  A task writes into its own run folder and is skipped when that folder is complete, so a
killed batch of tasks resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .config import PostTrainConfig, TrainConfig


@dataclass
class Task:
    kind: str  # "sft" | "posttrain"
    cfg: Any
    run_dir: str
    label: str = ""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


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


def run_task(task: Task, threads: int = 0, echo: bool = True) -> tuple[str, dict, float]:
    """Run one task here; returns (run_dir, final metrics record, wall seconds)."""
    from .posttrain import posttrain
    from .train import train_sft

    cfg = task.cfg
    if threads > 0:
        cfg = replace(cfg, runtime=replace(cfg.runtime, threads=threads))
    log = _file_logger(task.run_dir, task.label, echo)
    t0 = time.perf_counter()
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


def _run_in_worker(task: Task, threads: int) -> tuple[str, dict, float]:
    return run_task(task, threads=threads, echo=True)


class Runner:
    """Runs batches of independent tasks; complete task folders are skipped.

    With ``workers > 1`` one pool of spawned worker processes is created on first need and reused
    for every batch (a batch with a single task to run stays in this process).
    """

    def __init__(self, workers: int, echo: bool = True) -> None:
        self.workers = max(1, int(workers))
        self.echo = echo
        self._ex: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown()
            self._ex = None

    def run(self, tasks: Sequence[Task]) -> list[tuple[str, dict, float]]:
        from .runio import is_done

        todo = [t for t in tasks if not is_done(Path(t.run_dir))]
        if self.workers <= 1:
            return [run_task(t, echo=self.echo) for t in todo]
        if len(todo) <= 1:  # a lone task gets every core of the pool
            return [run_task(t, threads=cpu_count(), echo=self.echo) for t in todo]
        threads = threads_per_worker(self.workers)
        if self._ex is None:
            ctx = mp.get_context("spawn")
            self._ex = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
        futs = [self._ex.submit(_run_in_worker, t, threads) for t in todo]
        return [f.result() for f in futs]


    def run_staged(self, first: Sequence[Task], then: Sequence[Sequence[Task]]) -> tuple[list, list]:
        """Run ``first[i]`` and, as soon as it is complete, the tasks ``then[i]`` that need it.

        Keeps every worker busy when the first tasks outnumber the workers unevenly (e.g. three
        seeds' SFT runs on two workers). Returns (results of ``first``, results of ``then``).
        """
        from .runio import is_done

        if len(first) != len(then):
            raise ValueError("run_staged: one list of dependent tasks per first task")
        if self.workers <= 1:
            a = self.run(first)
            b = self.run([t for group in then for t in group])
            return a, b
        threads = threads_per_worker(self.workers)
        if self._ex is None:
            ctx = mp.get_context("spawn")
            self._ex = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
        ex = self._ex
        # fewer first tasks than workers: give each of them the idle workers' cores
        first_threads = max(threads, cpu_count() // max(1, min(self.workers, len(first))))
        first_res: list = []
        then_res: list = []
        pending: dict[cf.Future, int | None] = {}
        for i, t in enumerate(first):
            if is_done(Path(t.run_dir)):
                for d in then[i]:
                    if not is_done(Path(d.run_dir)):
                        pending[ex.submit(_run_in_worker, d, threads)] = None
            else:
                pending[ex.submit(_run_in_worker, t, first_threads)] = i
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for f in done:
                i = pending.pop(f)
                res = f.result()
                if i is None:
                    then_res.append(res)
                    continue
                first_res.append(res)
                for d in then[i]:
                    if not is_done(Path(d.run_dir)):
                        pending[ex.submit(_run_in_worker, d, threads)] = None
        return first_res, then_res


def run_tasks(tasks: Sequence[Task], workers: int, echo: bool = True) -> list[tuple[str, dict, float]]:
    """Run independent tasks with ``workers`` processes (1 = in this process); done ones are skipped."""
    with Runner(workers, echo) as r:
        return r.run(tasks)
