"""Ray for the math pipeline: scaling points as Ray tasks, and the shards of ``sample`` and
``advantages`` on Ray actors that each own one sampler.

Two pieces, both importing Ray only when used (the local path never needs it):

* :class:`RayBackend`, the Ray backend of :mod:`shared.executors` (``scaling.executor: ray``): each
  ``(seed, size)`` point is a Ray task reserving ``ray.cpus_per_task`` CPUs and ``ray.gpus_per_task``
  GPUs; retries, failure reports and Ctrl-C are :func:`shared.executors.run_jobs`'s.
* :class:`ActorShards`, a pool of ``actors.count`` Ray actors for the sharded sampling loops
  (:func:`mathreason.sampling.sample_to_store`, :func:`mathreason.credit.estimate_credit`). Each actor
  builds one worker (a sampler: one vLLM engine per GPU or tensor-parallel group, or the transformers
  backend on CPU) from a picklable factory and computes whole shards. The driver keeps the plan and is
  the only writer: a shard's rows are written (atomically, :class:`mathreason.runs.ShardedRows`) when
  they come back, so a shard whose actor dies is computed again by a new actor and nothing is lost or
  written twice. :class:`LocalShards` is the same interface in this process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from shared.configlib import require
from shared.executors import RayBackend as SharedRayBackend
from shared.executors import RayConfig, maybe_inject_fault, ray_connect, ray_env

__all__ = ["ActorShards", "ActorsConfig", "LocalShards", "RayBackend", "SampleWorker", "ShardRunner", "shard_runner"]

logger = logging.getLogger(__name__)


@dataclass
class ActorsConfig:
    """Ray actors for the shards of `sample` and `advantages` (with the `ray` section's cluster)."""

    count: int = 0
    """Actors, each owning one sampler, the shards are spread over (0 = one sampler in this process, no Ray). One per GPU (or per tensor-parallel group) with vLLM."""
    cpus: float = 1.0
    """CPUs Ray reserves per actor (the transformers backend on CPU uses them as torch threads)."""
    gpus: float | None = None
    """GPUs Ray reserves per actor (None = the backend's tensor_parallel_size with vLLM, 0 with transformers)."""
    retries: int = 2
    """Times a shard is computed again after its actor died, before the stage fails."""

    def validate(self) -> None:
        require(self.count >= 0, "count", "must be >= 0")
        require(self.cpus > 0, "cpus", "must be > 0")
        require(self.gpus is None or self.gpus >= 0, "gpus", "must be >= 0 or null")
        require(self.retries >= 0, "retries", "must be >= 0")


_NEEDS = "scaling.executor: ray and actors.count > 0 need"


class RayBackend(SharedRayBackend):
    """:class:`shared.executors.RayBackend` for scaling points (its error names this front end's fields)."""

    def __init__(self, cfg: RayConfig) -> None:
        super().__init__(cfg, log=logger.info, needs=_NEEDS)


# ---------------------------------------------------------------- shards on actors


class ShardRunner(Protocol):
    """Computes shards: ``map(items, folder)`` takes ``(shard index, payload)`` pairs and yields
    ``(shard index, result)`` as shards finish (in any order). ``folder`` names the shard store (logs and
    fault injection). ``close()`` releases the workers."""

    def map(self, items: list[tuple[int, Any]], folder: str | None = None) -> Iterator[tuple[int, Any]]: ...

    def close(self) -> None: ...


class LocalShards:
    """One worker, built here on first use, computing shards one after another."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._worker = None

    def map(self, items: list[tuple[int, Any]], folder: str | None = None) -> Iterator[tuple[int, Any]]:
        for i, payload in items:
            if self._worker is None:
                self._worker = self._factory()
            yield i, self._worker.run(payload)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


class _Host:
    """The body of one actor: a worker from ``factory``, computing one shard per call."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.worker = factory()

    def run(self, index: int, payload: Any, folder: str | None) -> Any:
        if folder is not None:
            maybe_inject_fault(f"{folder}/shard-{index:06d}", folder)
        return self.worker.run(payload)

    def close(self) -> None:
        self.worker.close()


class ActorShards:
    """``count`` Ray actors, each built with ``factory()`` (e.g. a sampler), computing shards.

    Each actor has one shard in flight; when an actor dies its shard goes back to the queue (at most
    ``retries`` times per shard) and a new actor replaces it. Results come back to the caller, which
    writes them, so a shard is stored once or not at all.
    """

    def __init__(self, factory: Callable[[], Any], cfg: ActorsConfig, ray_cfg: RayConfig, *, gpus: float = 0.0) -> None:
        self.ray, self._started = ray_connect(ray_cfg, log=logger.info, needs=_NEEDS)
        self._cls = self.ray.remote(num_cpus=cfg.cpus, num_gpus=gpus, max_restarts=0, max_concurrency=1)(_Host)
        self._factory = factory
        self._cfg = cfg
        self._opts = ray_env()
        self._actors = [self._new() for _ in range(cfg.count)]
        self.restarts = 0

    def _new(self):
        return self._cls.options(**self._opts).remote(self._factory)

    def map(self, items: list[tuple[int, Any]], folder: str | None = None) -> Iterator[tuple[int, Any]]:
        queue = list(items)
        attempts: dict[int, int] = {}
        inflight: dict[Any, tuple[int, Any, int]] = {}  # ref -> (shard, payload, actor slot)
        idle = list(range(len(self._actors)))

        def submit(slot: int) -> None:
            i, payload = queue.pop(0)
            attempts[i] = attempts.get(i, 0) + 1
            ref = self._actors[slot].run.remote(i, payload, folder)
            inflight[ref] = (i, payload, slot)

        try:
            while queue or inflight:
                while queue and idle:
                    submit(idle.pop(0))
                [ref], _ = self.ray.wait(list(inflight), num_returns=1)
                i, payload, slot = inflight.pop(ref)
                try:
                    result = self.ray.get(ref)
                except self.ray.exceptions.RayActorError as e:
                    if attempts[i] > self._cfg.retries:
                        raise RuntimeError(f"shard {i} of {folder}: its actor died {attempts[i]} times (actors.retries={self._cfg.retries})") from e
                    logger.warning("shard %d of %s: actor died (%s); computing it again on a new actor", i, folder, type(e).__name__)
                    self._actors[slot] = self._new()
                    self.restarts += 1
                    queue.insert(0, (i, payload))
                    idle.append(slot)
                    continue
                idle.append(slot)
                yield i, result
        except BaseException:
            for ref in inflight:
                try:
                    self.ray.cancel(ref)
                except Exception:  # noqa: BLE001 - finished or gone; close() kills the actors
                    pass
            raise

    def close(self) -> None:
        for a in self._actors:
            try:
                self.ray.get(a.close.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - dead or stuck: killed below
                pass
            self.ray.kill(a)
        self._actors = []
        if self._started:
            self.ray.shutdown()
            self._started = False


def shard_runner(factory: Callable[[], Any], actors: ActorsConfig, ray_cfg: RayConfig, *, gpus: float = 0.0) -> ShardRunner:
    """:class:`ActorShards` when ``actors.count > 0``, else :class:`LocalShards`."""
    if actors.count > 0:
        return ActorShards(factory, actors, ray_cfg, gpus=gpus)
    return LocalShards(factory)


class SampleWorker:
    """Samples whole chunks of ``(problem_id, prompt_ids)``: ``n`` completions each, sample ``j`` of problem
    ``p`` with seed ``row_seed(seed, tag, p, j)`` (the rows of :func:`mathreason.sampling.sample_to_store`).

    ``sampler`` is a sampler, or a factory called on first use (in an actor); a sampler it built is
    closed by :meth:`close`."""

    def __init__(self, sampler: Any, params: Any, *, n: int, seed: int, tag: str) -> None:
        self._own = callable(sampler) and not hasattr(sampler, "generate")
        self._factory = sampler if self._own else None
        self.sampler = None if self._own else sampler
        self.params, self.n, self.seed, self.tag = params, n, seed, tag

    def run(self, chunk: list[tuple[str, list[int]]]) -> list[dict]:
        from mathreason.sampling import Request, prompt_id, row_seed

        if self.sampler is None:
            self.sampler = self._factory()
        reqs = [Request(ids, [row_seed(self.seed, self.tag, pid, j) for j in range(self.n)]) for pid, ids in chunk]
        outs = self.sampler.generate(reqs, self.params)
        rows: list[dict] = []
        for (pid, ids), comps in zip(chunk, outs):
            pid_hash = prompt_id(ids)
            for j, c in enumerate(comps):
                rows.append({"problem_id": pid, "sample_index": j, "prompt_id": pid_hash, **c.to_dict()})
        return rows

    def close(self) -> None:
        if self._own and self.sampler is not None:
            self.sampler.close()
            self.sampler = None
