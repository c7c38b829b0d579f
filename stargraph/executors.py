"""The Ray backend of :mod:`shared.executors` for star-graph tasks (``executor: ray``).

Every task becomes a Ray task reserving ``ray.cpus_per_task`` CPUs and ``ray.gpus_per_task`` GPUs; Ray's
scheduler places them on the cluster's nodes. Retries, dependencies, failure reports and Ctrl-C are
:func:`shared.executors.run_jobs`'s; a job that raises or whose worker dies comes back here as an error
and is resubmitted by it (Ray's own task retries are off, so attempts are counted in one place).

Ray is imported only when this backend is made, so the local path never needs it. The nodes must be able
to import this project (the same checkout on a shared filesystem, or the package installed on every
node) and to read and write the run folder (a shared filesystem); see docs/cluster.md.
"""

from __future__ import annotations

import os
from typing import Any

from shared.configlib import ConfigError
from shared.executors import Job, RayConfig, ray_address

__all__ = ["RayBackend", "connect"]


def connect(cfg: RayConfig, log=print):
    """Join the configured cluster or start a Ray instance here (reusing one this process already has);
    returns ``(ray module, started here?)``."""
    try:
        import ray
    except Exception as e:  # noqa: BLE001 - any import failure means "not installed here"
        raise ConfigError(f"field executor: ray needs Ray, which does not import here ({e}): pip install 'stepcredit[cluster]'") from e
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


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


class RayBackend:
    """:class:`shared.executors.Backend` on Ray tasks."""

    slots = 1 << 30  # Ray queues tasks by their resource requests

    def __init__(self, cfg: RayConfig, log=print) -> None:
        self.ray, self._started = connect(cfg, log)
        self._remote = self.ray.remote(max_retries=0)(_call)

    def submit(self, job: Job) -> Any:
        opts: dict[str, Any] = {"num_cpus": job.cpus, "num_gpus": job.gpus, "name": job.key[:100]}
        env = {k: v for k, v in os.environ.items() if k.startswith("STEPCREDIT_")}
        if env:  # $STEPCREDIT_DATA, _CACHE, _INJECT_FAULTS reach the tasks, wherever Ray started its workers
            opts["runtime_env"] = {"env_vars": env}
        return self._remote.options(**opts).remote(job.fn, job.args, job.kwargs)

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
