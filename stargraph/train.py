"""``stargraph train``: next-token-prediction (SFT) on star graphs, with exact metrics and checkpoints.

The hot loop touches no Python per sample: the tokenised graphs live on the device as one
``(N, T)`` tensor, batches are slices of a per-epoch ``torch.randperm`` drawn from a seeded
generator, the loss is :func:`shared.losses.sft_loss` on :func:`shared.logprobs.token_logprobs` of the
target positions only, and the running loss stays on the device until an evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from shared.logprobs import token_logprobs
from shared.losses import sft_loss

from . import runio
from .config import DataConfig, RuntimeConfig, SFTConfig, TrainConfig
from .evaluate import evaluate
from .graphs import GraphSpec, make_splits
from .model import GPT, GPTConfig, autocast, resolve_device
from .queries import QueryData, fresh_queries, load_query_data, queries_per_graph
from .tokenizer import TokenizedGraphs

Log = Callable[[str], None]


def setup_runtime(rt: RuntimeConfig) -> torch.device:
    if rt.threads > 0:
        torch.set_num_threads(rt.threads)
    dev = resolve_device(rt.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


@dataclass
class StarData:
    """Train/test graphs, tokenised and resident on the device.

    ``train``: the SFT data (the training queries: the main family's graphs with their goals, or the
    round-2 goal and mixing options of :mod:`stargraph.queries`); ``eval_train``: the first
    ``n_eval_train`` main-family training graphs with their own goals (train metrics); ``test``: the
    main family's test graphs; ``extra_eval``: test sets of mixed shorter families.
    """

    spec: GraphSpec
    train: TokenizedGraphs
    test: TokenizedGraphs
    eval_train: TokenizedGraphs
    train_keys: list[bytes]
    test_keys: list[bytes]
    seed: int
    extra_eval: dict[str, TokenizedGraphs] = field(default_factory=dict)
    queries: QueryData | None = None

    @property
    def eval_sets(self) -> dict[str, TokenizedGraphs]:
        return {"train": self.eval_train, "test": self.test, **self.extra_eval}


def load_data(cfg: TrainConfig, device: torch.device) -> StarData:
    d = cfg.data
    spec = GraphSpec(d.degree, d.path_len, d.num_nodes)
    qd = load_query_data(spec, d.n_train, d.n_test, cfg.data_seed, d.query_options(), device)
    train_g, test_g = make_splits(spec, d.n_train, d.n_test, cfg.data_seed)
    return StarData(
        spec=spec,
        train=qd.train_q.data,
        test=qd.test,
        eval_train=qd.train_main.subset(slice(0, d.n_eval_train)),
        train_keys=train_g.keys(),
        test_keys=test_g.keys(),
        seed=cfg.data_seed,
        extra_eval=qd.extra_eval,
        queries=qd,
    )


def build_model(cfg: TrainConfig, spec: GraphSpec, T: int, device: torch.device) -> GPT:
    m = cfg.model
    gcfg = GPTConfig(
        vocab_size=spec.num_nodes + 4,
        block_size=T - 1,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_embd=m.n_embd,
        dropout=m.dropout,
        bias=m.bias,
    )
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 17)
    return GPT(gcfg, generator=gen).to(device)


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


def spec_dict(spec: GraphSpec, data_seed: int, n_train: int, n_test: int, n_eval_train: int, data: DataConfig | None = None) -> dict:
    """What a checkpoint records to rebuild its data (``data``: the round-2 query options too)."""
    out = {
        "n_eval_train": n_eval_train,
        "degree": spec.degree,
        "path_len": spec.path_len,
        "num_nodes": spec.num_nodes,
        "data_seed": data_seed,
        "n_train": n_train,
        "n_test": n_test,
    }
    if data is not None:
        out.update(goals=data.goals, mix_path_lens=list(data.mix_path_lens), mix_n_train=data.mix_n_train, mix_n_test=data.mix_n_test, online=data.online)
    return out


# Stream offset of the online SFT graphs (step t draws round ONLINE_ROUND + t of the fresh streams; the
# post-training fresh pools use rounds seed * 100000 + r, far below it).
ONLINE_ROUND = 1 << 40


def online_batch(data: StarData, cfg: TrainConfig, step: int) -> TokenizedGraphs:
    """The SFT batch of ``step`` under ``data.online``: queries of newly drawn graphs (a pure function
    of the data seed and the step, so a resumed run sees the same batches)."""
    bs = cfg.sft.batch_size
    n_graphs = -(-bs // queries_per_graph(data.spec, cfg.data.goals))
    q = fresh_queries(data.queries, n_graphs, data.seed, ONLINE_ROUND + step, device=data.train.tokens_NT.device)
    return q.data.subset(slice(0, bs))


def epoch_checkpoints(s: SFTConfig, n_train_rows: int) -> set[int]:
    """Steps of ``sft.checkpoint_every_epochs`` (an epoch = ``n_train_rows // batch_size`` steps, as the
    epoch sampler drops the remainder)."""
    if s.checkpoint_every_epochs <= 0:
        return set()
    every = max(1, n_train_rows // s.batch_size) * s.checkpoint_every_epochs
    return set(range(every, s.max_steps + 1, every))


def sft_step_loss(model, tokens_BT: torch.Tensor, P: int, device: torch.device, amp: bool | str, mask_BL: torch.Tensor | None = None):
    """Mean SFT loss of a batch of full sequences on their target tokens (or ``mask_BL`` of them)."""
    with autocast(device, amp):
        logits = model(tokens_BT[:, :-1], logits_from=P - 1)
    logps = token_logprobs(logits, tokens_BT[:, P:])
    if mask_BL is None:
        mask_BL = torch.ones_like(logps, dtype=torch.bool)
    return sft_loss(logps, mask_BL).loss_B.mean()


def train_sft(cfg: TrainConfig, run_dir: str | Path, log: Log = print) -> dict:
    """Run (or resume, or skip when done) SFT in ``run_dir``; return the final metrics record."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = runio.MetricsLog(run_dir / "metrics.jsonl")
    if runio.is_done(run_dir):
        recs = metrics.read()
        log(f"[train] {run_dir} is complete; skipping")
        return recs[-1] if recs else {}
    runio.write_config(run_dir, cfg)
    rt = cfg.runtime
    device = setup_runtime(rt)
    data = load_data(cfg, device)
    P, T = data.train.P, data.train.T
    model = build_model(cfg, data.spec, T, device)
    s = cfg.sft
    opt = runio.make_optimizer(model, lr=s.learning_rate, weight_decay=s.weight_decay, betas=(s.beta1, s.beta2))
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + 1)
    sampler = EpochSampler(len(data.train), s.batch_size, gen, device)
    fwd = torch.compile(model) if rt.compile else model
    sd = spec_dict(data.spec, data.seed, cfg.data.n_train, cfg.data.n_test, cfg.data.n_eval_train, cfg.data)
    ckpt_steps = set(s.checkpoint_at) | {s.max_steps} | epoch_checkpoints(s, len(data.train))
    train_mask = data.train.target_mask_NL if data.train.target_len_N is not None else None

    start, wall_before, cpu_before = 0, 0.0, 0.0
    resume_path = run_dir / "resume.pt"
    if resume_path.exists():
        st = torch.load(resume_path, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        sampler.load(st["sampler"])
        start, wall_before, cpu_before = int(st["step"]), float(st["wall"]), float(st.get("cpu", 0.0))
        metrics.truncate_after(start)
        log(f"[train] resuming {run_dir} at step {start}")
    else:
        metrics.reset()

    sets = data.eval_sets
    t0 = time.perf_counter() - wall_before
    c0 = time.process_time() - cpu_before
    loss_sum = torch.zeros((), device=device)
    n_loss = 0

    def do_eval(step: int) -> dict:
        nonlocal loss_sum, n_loss
        rec = {"step": step, "samples": step * s.batch_size, "epoch": None if cfg.data.online else step * s.batch_size / len(data.train), "lr": runio.lr_at(max(step - 1, 0), lr=s.learning_rate, warmup=s.warmup_steps, total=s.max_steps, schedule=s.schedule, min_lr=s.min_lr)}
        rec["train_loss"] = float(loss_sum / n_loss) if n_loss else float("nan")
        rec.update(evaluate(model, sets, batch_size=rt.eval_batch_size, amp=rt.amp, bok_k=rt.bok_k))
        rec["time_s"] = time.perf_counter() - t0
        rec["cpu_time_s"] = time.process_time() - c0
        metrics.append(rec)
        loss_sum = torch.zeros((), device=device)
        n_loss = 0
        log(
            f"[train] step {step:6d} loss {rec['train_loss']:.4f} train acc {rec['train/acc']:.3f} "
            f"crit {rec['train/crit_acc']:.3f} | test acc {rec['test/acc']:.3f} crit {rec['test/crit_acc']:.3f} "
            f"lookup {rec.get('test/lookup_acc', float('nan')):.3f} | {rec['time_s']:.0f}s"
        )
        return rec

    def save(step: int) -> None:
        runio.save_checkpoint(run_dir / f"ckpt_{step}.pt", model, step=step, spec=sd, extra={"run": "sft", "seed": cfg.seed})

    rec: dict = {}
    if start == 0:
        rec = do_eval(0)
        if 0 in ckpt_steps:
            save(0)
    model.train()
    for step in range(start, s.max_steps):
        runio.set_lr(opt, runio.lr_at(step, lr=s.learning_rate, warmup=s.warmup_steps, total=s.max_steps, schedule=s.schedule, min_lr=s.min_lr))
        if cfg.data.online:
            ob = online_batch(data, cfg, step)
            batch, mask = ob.tokens_NT, (ob.target_mask_NL if ob.target_len_N is not None else None)
        else:
            idx = sampler.next()
            batch, mask = data.train.tokens_NT[idx], (None if train_mask is None else train_mask[idx])
        loss = sft_step_loss(fwd, batch, P, device, rt.amp, mask)
        loss.backward()
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum += loss.detach()
        n_loss += 1
        done = step + 1
        if done % s.eval_every == 0 or done == s.max_steps:
            rec = do_eval(done)
            model.train()
        if done in ckpt_steps:
            save(done)
        if s.resume_every and done % s.resume_every == 0 and done < s.max_steps:
            if done % s.eval_every:  # keep metrics and snapshot consistent: snapshot only after an eval
                continue
            runio.atomic_torch_save(
                {"model": model.state_dict(), "opt": opt.state_dict(), "sampler": sampler.state(), "step": done, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0},
                resume_path,
            )
    if start == s.max_steps and not rec:
        recs = metrics.read()
        rec = recs[-1] if recs else {}
    if resume_path.exists():
        resume_path.unlink()
    runio.mark_done(run_dir, {"step": s.max_steps, "time_s": time.perf_counter() - t0, "cpu_time_s": time.process_time() - c0})
    return rec
