"""The one training loop of the testbed (SFT and post-training), with its optimizer, LR schedule and samplers.

:func:`run_loop` drives a :class:`Task` (what one step trains on and what an evaluation records):

- every step: set the learning rate of the schedule, ``task.step`` (the loss, or None when there is
  nothing to train on), backward, gradient clip, optimizer step;
- every ``eval_every`` steps (and at steps 0 and ``steps``): ``task.record`` plus wall and CPU time,
  appended to ``metrics.jsonl``, logged through ``task.message``;
- checkpoints at the asked steps (``save``);
- every ``snapshot_every`` steps (at an evaluation, so the metrics and the snapshot agree): a resumable
  snapshot ``resume.pt`` (model, optimizer, the task's state: samplers, RNG streams, pools; the
  global torch RNG, the step and the elapsed times; the schedule is a function of the step). A killed
  run restarts from it: the metrics after its step are dropped (rewritten atomically) and recomputed,
  so nothing is lost or duplicated, and the result equals an uninterrupted run's;
- at the end: the ``DONE`` marker (written atomically), then the snapshot is removed.

:data:`AFTER_STEP` holds test hooks called with each finished step after its record and before its
checkpoint and snapshot (the worst moment to die); kill-and-resume tests use it to kill the process.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable, Protocol

import torch

from shared.logprobs import token_logprobs
from shared.objectives import ObjectiveParams, SequenceBatch

from . import runio
from .config import RuntimeConfig
from .model import autocast, resolve_device
from .objectives import SPECS

Log = Callable[[str], None]

RESUME = "resume.pt"

AFTER_STEP: list[Callable[[int], None]] = []
"""Hooks called with each finished step (after its metrics record, before its checkpoint and snapshot)."""


def setup_runtime(rt: RuntimeConfig) -> torch.device:
    if rt.threads > 0:
        torch.set_num_threads(rt.threads)
    dev = resolve_device(rt.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


# ---------------------------------------------------------------- optimizer and schedule


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with decay on matrices only, fused (one kernel per step for every tensor of a group: on the
    CPU about 3x faster than ``foreach``, which loops over the tensors there; the same update to float
    rounding); ``foreach`` on devices without a fused kernel."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    dev = next(model.parameters()).device
    kw = {"fused": True} if dev.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kw)


def warmup_count(warmup: float, total: int) -> int:
    """Warm-up steps of a ``warmup_steps`` value, as transformers reads it: ``>= 1`` = that many steps,
    ``< 1`` = that fraction of the ``total`` steps, rounded up."""
    return int(warmup) if warmup >= 1 else math.ceil(total * warmup)


def lr_at(step: int, *, lr: float, warmup: float, total: int, schedule: str = "constant", min_lr: float = 0.0) -> float:
    """Linear warm-up over ``warmup`` steps (step 0 gets lr/warmup; a ``warmup`` < 1 is a fraction of ``total``,
    see :func:`warmup_count`), then constant or cosine to ``min_lr``."""
    warmup = warmup_count(warmup, total)
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    span = max(1, total - warmup)
    ratio = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


# ---------------------------------------------------------------- samplers


class EpochSampler:
    """Batches of indices without replacement within an epoch (a new seeded permutation per epoch)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} training graphs")
        self.n, self.bs, self.g, self.device = n, batch_size, generator, device
        self.perm = torch.randperm(n, generator=generator, device=device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.g, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return idx

    def state(self) -> dict:
        return {"perm": self.perm.cpu(), "pos": self.pos, "gen": self.g.get_state()}

    def load(self, st: dict) -> None:
        self.perm = st["perm"].to(self.device)
        self.pos = int(st["pos"])
        self.g.set_state(st["gen"])


class CyclicSampler:
    """Batches of ``bs`` indices from successive seeded permutations of ``range(n)`` (any ``n >= 1``)."""

    def __init__(self, n: int, bs: int, generator: torch.Generator) -> None:
        self.n, self.bs, self.g = n, bs, generator
        self.buf = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self.buf.numel() < self.bs:
            self.buf = torch.cat([self.buf, torch.randperm(self.n, generator=self.g)])
        out, self.buf = self.buf[: self.bs], self.buf[self.bs :]
        return out

    def state(self) -> dict:
        """The pending indices (the generator is the caller's and saved by it)."""
        return {"n": self.n, "bs": self.bs, "buf": self.buf.clone()}

    def load(self, st: dict) -> None:
        self.n, self.bs, self.buf = int(st["n"]), int(st["bs"]), st["buf"].clone()


# ---------------------------------------------------------------- log-probs and the SFT loss


def target_logps(model, tokens_BT: torch.Tensor, P: int, device: torch.device, amp: bool | str) -> torch.Tensor:
    """``(B, T - P)`` token log-probs of the target positions ``P .. T - 1`` of full rows."""
    with autocast(device, amp):
        logits = model(tokens_BT[:, :-1], logits_from=P - 1)
    return token_logprobs(logits, tokens_BT[:, P:])


def pair_target_logps(model, chosen_BT: torch.Tensor, rejected_BT: torch.Tensor, P: int, device: torch.device, amp: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T - P)`` target log-probs of the chosen and of the rejected rows of pairs whose rows share
    their first ``P + 1`` tokens (the prompt and the source): that shared part runs once per pair (its
    keys and values serve both sides, :meth:`stargraph.model.GPT.forward_cached`) and only the rest of
    each side runs twice. The values (and gradients) of :func:`target_logps` of both sides, to float
    rounding; rows too short for a shared part go through :func:`target_logps`."""
    B, T = chosen_BT.shape
    if T - 1 <= P + 1:
        lp = target_logps(model, torch.cat([chosen_BT, rejected_BT]), P, device, amp)
        return lp[:B], lp[B:]
    with autocast(device, amp):
        head, cache = model.forward_cached(chosen_BT[:, : P + 1], logits_from=P - 1)  # (B, 2, V): positions P - 1, P
        both = [(torch.cat([k, k]), torch.cat([v, v])) for k, v in cache]  # (2B, H, P + 1, D)
        tail, _ = model.forward_cached(torch.cat([chosen_BT[:, P + 1 : -1], rejected_BT[:, P + 1 : -1]]), both)  # (2B, T - P - 2, V)
    logits = torch.cat([torch.cat([head, head]), tail], dim=1)  # (2B, T - P, V)
    lp = token_logprobs(logits, torch.cat([chosen_BT[:, P:], rejected_BT[:, P:]]))
    return lp[:B], lp[B:]


def sft_step_loss(model, tokens_BT: torch.Tensor, P: int, device: torch.device, amp: bool | str, mask_BL: torch.Tensor | None = None):
    """Mean SFT loss of a batch of full sequences on their target tokens (or ``mask_BL`` of them): the
    ``sft`` objective of :data:`stargraph.objectives.SPECS`, as the post-training control uses it."""
    logps = target_logps(model, tokens_BT, P, device, amp)
    if mask_BL is None:
        mask_BL = torch.ones_like(logps, dtype=torch.bool)
    return SPECS["sft"](SequenceBatch(tokens_BT, mask_BL), logps, _NO_PARAMS).loss


_NO_PARAMS = ObjectiveParams()


# ---------------------------------------------------------------- the loop


class Task(Protocol):
    """What :func:`run_loop` trains: the batches and loss of a step, the evaluation record, resumable state."""

    def step(self, step: int) -> torch.Tensor | None:
        """The loss of optimizer step ``step`` (0-based; with gradients), or None to skip the update."""

    def record(self, step: int) -> dict:
        """The metrics record after ``step`` steps (the loop adds ``time_s`` and ``cpu_time_s``); resets running means."""

    def message(self, rec: dict) -> str:
        """The log line of a record."""

    def state(self) -> dict:
        """Everything besides model and optimizer that the next steps depend on (samplers, RNG streams, pools)."""

    def load_state(self, st: dict) -> None:
        """Restore :meth:`state`."""


def _rng_state(device: torch.device) -> dict:
    st = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict | None, device: torch.device) -> None:
    if not st:
        return
    torch.set_rng_state(st["cpu"])
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def run_loop(
    task: Task,
    *,
    run_dir: str | Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    steps: int,
    eval_every: int,
    lr: Callable[[int], float],
    grad_clip: float,
    snapshot_every: int,
    checkpoints: Iterable[int] = (),
    save: Callable[[int], None] | None = None,
    tag: str = "train",
    log: Log = print,
) -> dict:
    """Train ``model`` for ``steps`` steps in ``run_dir`` (resuming from its snapshot when there is one);
    return the last metrics record. ``lr(step)`` is the learning rate of 0-based step ``step``;
    ``save(step)`` writes a checkpoint at each step of ``checkpoints``; ``snapshot_every`` (0 = never)
    must be a multiple of ``eval_every`` to take effect at every such step."""
    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    metrics = runio.MetricsLog(run_dir / "metrics.jsonl")
    ckpts = set(checkpoints)
    resume_path = run_dir / RESUME
    start, wall_before, cpu_before = 0, 0.0, 0.0
    if resume_path.exists():
        st = torch.load(resume_path, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        task.load_state(st.get("task", st))  # (SFT snapshots of earlier versions kept the sampler at the top)
        _set_rng_state(st.get("rng"), device)
        start, wall_before, cpu_before = int(st["step"]), float(st["wall"]), float(st.get("cpu", 0.0))
        metrics.truncate_after(start)
        log(f"[{tag}] resuming {run_dir} at step {start}")
    else:
        metrics.reset()
    done_marker = run_dir / runio.DONE
    if done_marker.exists():  # a stale marker of an earlier run in this folder
        done_marker.unlink()
    t0 = time.perf_counter() - wall_before
    c0 = time.process_time() - cpu_before

    def evaluate(step: int) -> dict:
        rec = task.record(step)
        rec["time_s"] = time.perf_counter() - t0
        rec["cpu_time_s"] = time.process_time() - c0
        metrics.append(rec)
        log(task.message(rec))
        return rec

    rec: dict = {}
    if start == 0:
        rec = evaluate(0)
        if 0 in ckpts and save is not None:
            save(0)
    model.train()
    for step in range(start, steps):
        set_lr(opt, lr(step))
        loss = task.step(step)
        if loss is not None:
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        done = step + 1
        evaluated = done % eval_every == 0 or done == steps
        if evaluated:
            rec = evaluate(done)
            model.train()
        for hook in AFTER_STEP:
            hook(done)
        if done in ckpts and save is not None:
            save(done)
        if snapshot_every and done % snapshot_every == 0 and done < steps and evaluated:
            runio.atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "task": task.state(),
                    "rng": _rng_state(device),
                    "step": done,
                    "wall": time.perf_counter() - t0,
                    "cpu": time.process_time() - c0,
                },
                resume_path,
            )
    if start == steps and not rec:
        recs = metrics.read()
        rec = recs[-1] if recs else {}
    runio.mark_done(run_dir, {"step": steps, "time_s": time.perf_counter() - t0, "cpu_time_s": time.process_time() - c0})
    if resume_path.exists():
        resume_path.unlink()
    return rec
