"""Run many independent jobs (sweep points, scaling sizes) on an executor: here, or on a Ray cluster.

The front ends describe their work as :class:`Job` objects (a picklable module-level function and its
arguments, the resources it needs, the jobs it must wait for) and hand them to :func:`run_jobs` with a
:class:`Backend`. :func:`run_jobs` owns what every executor must do the same way:

* dependencies: a job starts once every job of ``after`` succeeded; if one of them failed for good, the
  job is reported as not run (never silently dropped);
* retries: a job that raises (or whose worker dies) is submitted again, up to ``retries`` more times,
  and then reported in the returned :class:`Outcome` list (``ok=False``, the last error's traceback);
* Ctrl-C: a ``KeyboardInterrupt`` cancels every job in flight (the backend kills their processes) and is
  raised again, so a re-run of the same command resumes from what finished.

Skipping finished work on resume is the front end's business (it knows its DONE markers): it simply
does not submit those jobs.

Backends: :class:`InlineBackend` (this process, one job at a time), :class:`ProcessBackend` (a pool of
spawned worker processes), both standard library only, and :class:`RayBackend` (Ray tasks; Ray, an
optional extra, is imported only when it is made: the architecture test allows exactly this).
:class:`RayConfig` is the config section both front ends share; :func:`ray_connect` joins or starts the
cluster (the math front end's shard actors use it too).

Fault injection (for tests and drills): ``STEPCREDIT_INJECT_FAULTS="<substring>[:<n>[:<mode>]],..."``
makes the first ``n`` attempts (default 1) of every job whose key contains ``<substring>`` fail: by an
exception (mode ``raise``, the default), by killing the worker process (``exit``: ``os._exit``), or by
hanging until cancelled (``hang``: an interrupted run); see :func:`maybe_inject_fault`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from shared.configlib import require

__all__ = [
    "Backend",
    "EXECUTORS",
    "InlineBackend",
    "InjectedFault",
    "Job",
    "JobsFailed",
    "Outcome",
    "ProcessBackend",
    "RayBackend",
    "RayConfig",
    "cpu_count",
    "maybe_inject_fault",
    "ray_address",
    "ray_connect",
    "ray_env",
    "run_jobs",
]

EXECUTORS = ("local", "ray")
FAULTS_ENV = "STEPCREDIT_INJECT_FAULTS"


@dataclass
class RayConfig:
    """Where and how jobs run with ``executor: ray``."""

    address: str = ""
    "Ray cluster to join ('' = $RAY_ADDRESS if set, else a Ray instance started on this machine; 'auto' = the cluster already running here, e.g. after `ray start --head`)."
    num_cpus: int = 0
    "CPUs of a Ray instance started on this machine (0 = all of them; ignored when joining a cluster)."
    cpus_per_task: float = 1.0
    "CPUs Ray reserves for each point/size; also its torch threads (rounded down, at least 1)."
    gpus_per_task: float = 0.0
    "GPUs Ray reserves for each point/size (0 on CPU; 1 = one GPU each; 0.5 = two points share a GPU)."

    def validate(self) -> None:
        require(self.num_cpus >= 0, "num_cpus", f"must be >= 0, got {self.num_cpus}")
        require(self.cpus_per_task > 0, "cpus_per_task", f"must be > 0, got {self.cpus_per_task}")
        require(self.gpus_per_task >= 0, "gpus_per_task", f"must be >= 0, got {self.gpus_per_task}")


def ray_address(cfg: RayConfig) -> str | None:
    """The cluster address to join: ``cfg.address``, else ``$RAY_ADDRESS``, else None (start one here)."""
    return cfg.address or os.environ.get("RAY_ADDRESS") or None


def ray_connect(cfg: RayConfig, *, log: Callable[[str], None] = print, needs: str = "executor: ray needs"):
    """Join the configured cluster or start a Ray instance here (reusing one this process already has);
    returns ``(ray module, started here?)``. Without Ray: a ConfigError ``"<needs> Ray, which does not import
    here ..."``."""
    from shared.configlib import ConfigError

    try:
        import ray
    except Exception as e:  # noqa: BLE001 - any import failure means "not installed here"
        raise ConfigError(f"{needs} Ray, which does not import here ({e}): pip install 'stepcredit[cluster]'") from e
    if ray.is_initialized():
        return ray, False
    addr = ray_address(cfg)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    if addr is None:
        kwargs["num_cpus"] = cfg.num_cpus or None
    ray.init(address=addr, **kwargs)
    res = ray.cluster_resources()
    log(f"[ray] {'joined ' + addr if addr else 'started a local Ray instance'}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return ray, True


def ray_env() -> dict[str, Any]:
    """Ray options passing this process's ``STEPCREDIT_*`` and ``HF_*`` variables ($STEPCREDIT_DATA, _CACHE,
    _INJECT_FAULTS, the HF cache) to tasks and actors, wherever Ray started its workers."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("STEPCREDIT_", "HF_"))}
    return {"runtime_env": {"env_vars": env}} if env else {}


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------- jobs and outcomes


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args, **kwargs)`` in some worker."""

    key: str
    """Unique name (a run folder's label); used in logs, reports and fault injection."""
    fn: Callable[..., Any]
    """A module-level function (pickled by reference)."""
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    cpus: float = 1.0
    """CPUs to reserve (Ray); the job itself sets its thread count."""
    gpus: float = 0.0
    """GPUs to reserve (Ray)."""
    after: tuple[str, ...] = ()
    """Keys of jobs that must succeed before this one starts."""


@dataclass
class Outcome:
    """What became of a job."""

    key: str
    ok: bool
    value: Any = None
    error: str = ""
    """The last failure's traceback (or why it never ran)."""
    attempts: int = 0
    seconds: float = 0.0
    """Wall time of the last attempt, as seen by the scheduler."""


class JobsFailed(RuntimeError):
    """Some jobs failed after every retry (or never ran because a job they need failed)."""

    def __init__(self, failed: Sequence[Outcome]):
        self.failed = list(failed)
        lines = [f"  {o.key}: {o.attempts} attempt(s); {o.error.strip().splitlines()[-1] if o.error.strip() else '?'}" for o in self.failed]
        super().__init__(f"{len(self.failed)} job(s) failed:\n" + "\n".join(lines))


class InjectedFault(RuntimeError):
    """Raised by :func:`maybe_inject_fault`."""


def maybe_inject_fault(key: str, marker_dir: str | Path) -> None:
    """Fail this attempt of job ``key`` if ``$STEPCREDIT_INJECT_FAULTS`` asks for it (see the module docstring).

    Attempts are counted in ``<marker_dir>/.injected_faults`` (one line per injected fault), so the count
    survives the worker processes that a fault kills.
    """
    spec = os.environ.get(FAULTS_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        sub, _, rest = item.partition(":")
        times, _, mode = rest.partition(":")
        if sub not in key:
            continue
        marker = Path(marker_dir) / ".injected_faults"
        done = len(marker.read_text().splitlines()) if marker.exists() else 0
        if done >= int(times or 1):
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        with open(marker, "a") as f:
            f.write(f"{key} {time.time():.3f}\n")
            f.flush()
            os.fsync(f.fileno())
        if mode == "exit":
            os._exit(3)
        if mode == "hang":
            time.sleep(1e6)
        raise InjectedFault(f"injected fault {done + 1} of job {key!r} (${FAULTS_ENV}={spec!r})")


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """Runs submitted jobs somewhere; :func:`run_jobs` does the bookkeeping."""

    slots: int
    """Jobs :func:`run_jobs` keeps in flight at once (Ray: a large number; its scheduler queues by resources)."""

    def submit(self, job: Job) -> Any:
        """Start ``job``; returns a handle."""

    def wait(self, handles: list) -> list:
        """Block until at least one handle is finished; return the finished ones."""

    def result(self, handle: Any) -> Any:
        """The job's return value; raises its exception (or the worker's death) if it failed."""

    def cancel(self, handles: list) -> None:
        """Stop these jobs now (Ctrl-C), killing their workers if need be."""

    def close(self) -> None:
        """Release the workers."""


class InlineBackend:
    """Runs each job in this process when :meth:`wait` is called, one at a time, in submission order."""

    slots = 1

    def __init__(self) -> None:
        self._results: dict[int, tuple[bool, Any]] = {}

    def submit(self, job: Job) -> Any:
        return [job]

    def wait(self, handles: list) -> list:
        h = handles[0]
        job = h[0]
        try:
            h.append((True, job.fn(*job.args, **job.kwargs)))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # reported by result()
            h.append((False, e))
        return [h]

    def result(self, handle: Any) -> Any:
        ok, value = handle[1]
        if not ok:
            raise value
        return value

    def cancel(self, handles: list) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessBackend:
    """A pool of ``workers`` spawned processes (``concurrent.futures``); a broken pool is rebuilt on the next submit."""

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> None:
        self.slots = max(1, int(workers))
        self._init = (initializer, initargs)
        self._ex: cf.ProcessPoolExecutor | None = None

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self._ex is not None and getattr(self._ex, "_broken", False):
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None
        if self._ex is None:
            self._ex = cf.ProcessPoolExecutor(
                max_workers=self.slots, mp_context=mp.get_context("spawn"), initializer=self._init[0], initargs=self._init[1]
            )
        return self._ex

    def submit(self, job: Job) -> Any:
        return self._pool().submit(job.fn, *job.args, **job.kwargs)

    def wait(self, handles: list) -> list:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Any) -> Any:
        return handle.result()

    def cancel(self, handles: list) -> None:
        for h in handles:
            h.cancel()
        if self._ex is not None:
            procs = list(getattr(self._ex, "_processes", {}).values())
            self._ex.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # running jobs do not stop for a cancelled future: end their processes
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=10)
            self._ex = None

    def close(self) -> None:
        if self._ex is not None:
            self._ex.shutdown()
            self._ex = None


# ---------------------------------------------------------------- the scheduler


def run_jobs(
    jobs: Sequence[Job],
    backend: Backend,
    *,
    retries: int = 0,
    log: Callable[[str], None] = print,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``jobs`` on ``backend``; returns one :class:`Outcome` per job, in the order they finished.

    A job whose ``after`` names a key that is not among ``jobs`` counts that dependency as met (it was
    finished earlier and skipped by the caller). ``on_outcome`` is called as each outcome is final.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("run_jobs: job keys must be unique")
    by_key = {j.key: j for j in jobs}
    waiting = list(jobs)
    ok: set[str] = set()
    failed: set[str] = set()
    attempts: dict[str, int] = {}
    outcomes: list[Outcome] = []
    inflight: dict[int, tuple[Any, Job, float]] = {}

    def final(o: Outcome) -> None:
        outcomes.append(o)
        (ok if o.ok else failed).add(o.key)
        if on_outcome is not None:
            on_outcome(o)

    def submit(job: Job) -> None:
        attempts[job.key] = attempts.get(job.key, 0) + 1
        h = backend.submit(job)
        inflight[id(h)] = (h, job, time.perf_counter())

    try:
        while waiting or inflight:
            # start every job whose dependencies are met, up to the backend's slots
            still = []
            for job in waiting:
                deps = [d for d in job.after if d in by_key]
                bad = [d for d in deps if d in failed]
                if bad:
                    final(Outcome(job.key, False, error=f"not run: job {bad[0]!r} that it needs failed", attempts=0))
                elif all(d in ok for d in deps) and len(inflight) < backend.slots:
                    submit(job)
                else:
                    still.append(job)
            waiting = still
            if not inflight:
                if waiting:  # cannot happen with acyclic dependencies
                    raise ValueError(f"run_jobs: jobs wait for each other: {[j.key for j in waiting]}")
                break
            for h in backend.wait([v[0] for v in inflight.values()]):
                _, job, t0 = inflight.pop(id(h))
                try:
                    value = backend.result(h)
                except KeyboardInterrupt:
                    raise
                except BaseException as e:  # noqa: BLE001 - any failure of a job, its worker's death included
                    err = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                    n = attempts[job.key]
                    if n <= retries:
                        log(f"[executor] {job.key}: attempt {n} failed ({type(e).__name__}: {str(e).strip()[:200]}); retrying")
                        submit(job)
                    else:
                        log(f"[executor] {job.key}: failed after {n} attempt(s): {type(e).__name__}: {str(e).strip()[:200]}")
                        final(Outcome(job.key, False, error=err, attempts=n, seconds=time.perf_counter() - t0))
                    continue
                final(Outcome(job.key, True, value=value, attempts=attempts[job.key], seconds=time.perf_counter() - t0))
    except KeyboardInterrupt:
        log(f"[executor] interrupted: cancelling {len(inflight)} job(s) in flight")
        backend.cancel([v[0] for v in inflight.values()])
        raise
    return outcomes


# ---------------------------------------------------------------- Ray tasks


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


class RayBackend:
    """:class:`Backend` on Ray tasks: each job reserves its ``cpus``/``gpus``; Ray's own task retries are off,
    so attempts are counted in one place (:func:`run_jobs`)."""

    slots = 1 << 30  # Ray queues tasks by their resource requests

    def __init__(self, cfg: RayConfig, *, log: Callable[[str], None] = print, needs: str = "executor: ray needs") -> None:
        self.ray, self._started = ray_connect(cfg, log=log, needs=needs)
        self._remote = self.ray.remote(max_retries=0)(_call)

    def submit(self, job: Job) -> Any:
        return self._remote.options(num_cpus=job.cpus, num_gpus=job.gpus, name=job.key[:100], **ray_env()).remote(job.fn, job.args, job.kwargs)

    def wait(self, handles: list) -> list:
        done, _ = self.ray.wait(handles, num_returns=1)
        return done

    def result(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def cancel(self, handles: list) -> None:
        for h in handles:
            try:
                self.ray.cancel(h, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False
