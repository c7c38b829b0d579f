"""``stargraph train``: next-token-prediction (SFT) on star graphs, with exact metrics and checkpoints.

The hot loop touches no Python per sample: the tokenised graphs live on the device as one
``(N, T)`` tensor, batches are slices of a per-epoch ``torch.randperm`` drawn from a seeded
generator, the loss is :func:`shared.losses.sft_loss` on :func:`shared.logprobs.token_logprobs` of the
target positions only, and the running loss stays on the device until an evaluation. The loop itself
(schedule, optimizer steps, evaluations, checkpoints, kill-and-resume) is :func:`stargraph.loop.run_loop`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from . import runio
from .config import DataConfig, SFTConfig, TrainConfig
from .evaluate import evaluate
from .graphs import GraphSpec, make_splits
from .loop import EpochSampler, lr_at, make_optimizer, run_loop, setup_runtime, sft_step_loss
from .model import GPT, GPTConfig
from .queries import QueryData, fresh_queries, load_query_data, queries_per_graph
from .tokenizer import TokenizedGraphs

Log = Callable[[str], None]


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


class SFTTask:
    """One SFT step per batch of training queries (or of fresh graphs under ``data.online``); records
    carry the samples seen, the epoch, the learning rate, the mean training loss and :func:`evaluate`."""

    def __init__(self, cfg: TrainConfig, data: StarData, model: GPT, device: torch.device, log_tag: str = "train") -> None:
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        s, rt = cfg.sft, cfg.runtime
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + 1)
        self.sampler = EpochSampler(len(data.train), s.batch_size, gen, device)
        self.fwd = torch.compile(model) if rt.compile else model
        self.train_mask = data.train.target_mask_NL if data.train.target_len_N is not None else None
        self.sets = data.eval_sets
        self.loss_sum = torch.zeros((), device=device)
        self.n_loss = 0

    def lr(self, step: int) -> float:
        s = self.cfg.sft
        return lr_at(step, lr=s.learning_rate, warmup=s.warmup_steps, total=s.max_steps, schedule=s.schedule, min_lr=s.min_lr)

    def step(self, step: int) -> torch.Tensor:
        data, cfg = self.data, self.cfg
        if cfg.data.online:
            ob = online_batch(data, cfg, step)
            batch, mask = ob.tokens_NT, (ob.target_mask_NL if ob.target_len_N is not None else None)
        else:
            idx = self.sampler.next()
            batch, mask = data.train.tokens_NT[idx], (None if self.train_mask is None else self.train_mask[idx])
        loss = sft_step_loss(self.fwd, batch, data.train.P, self.device, cfg.runtime.amp, mask)
        self.loss_sum += loss.detach()
        self.n_loss += 1
        return loss

    def record(self, step: int) -> dict:
        s, rt = self.cfg.sft, self.cfg.runtime
        n_train = len(self.data.train)
        rec = {"step": step, "samples": step * s.batch_size, "epoch": None if self.cfg.data.online else step * s.batch_size / n_train, "lr": self.lr(max(step - 1, 0))}
        rec["train_loss"] = float(self.loss_sum / self.n_loss) if self.n_loss else float("nan")
        rec.update(evaluate(self.model, self.sets, batch_size=rt.eval_batch_size, amp=rt.amp, bok_k=rt.bok_k))
        self.loss_sum = torch.zeros((), device=self.device)
        self.n_loss = 0
        return rec

    def message(self, rec: dict) -> str:
        return (
            f"[train] step {rec['step']:6d} loss {rec['train_loss']:.4f} train acc {rec['train/acc']:.3f} "
            f"crit {rec['train/crit_acc']:.3f} | test acc {rec['test/acc']:.3f} crit {rec['test/crit_acc']:.3f} "
            f"lookup {rec.get('test/lookup_acc', float('nan')):.3f} | {rec['time_s']:.0f}s"
        )

    def state(self) -> dict:
        return {"sampler": self.sampler.state()}

    def load_state(self, st: dict) -> None:
        self.sampler.load(st["sampler"])


def train_sft(cfg: TrainConfig, run_dir: str | Path, log: Log = print) -> dict:
    """Run (or resume, or skip when done) SFT in ``run_dir``; return the final metrics record."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if runio.is_done(run_dir):
        recs = runio.MetricsLog(run_dir / "metrics.jsonl").read()
        log(f"[train] {run_dir} is complete; skipping")
        return recs[-1] if recs else {}
    runio.write_config(run_dir, cfg)
    device = setup_runtime(cfg.runtime)
    data = load_data(cfg, device)
    model = build_model(cfg, data.spec, data.train.T, device)
    s = cfg.sft
    opt = make_optimizer(model, lr=s.learning_rate, weight_decay=s.weight_decay, betas=(s.beta1, s.beta2))
    task = SFTTask(cfg, data, model, device)
    sd = spec_dict(data.spec, data.seed, cfg.data.n_train, cfg.data.n_test, cfg.data.n_eval_train, cfg.data)

    def save(step: int) -> None:
        runio.save_checkpoint(run_dir / f"ckpt_{step}.pt", model, step=step, spec=sd, extra={"run": "sft", "seed": cfg.seed})

    return run_loop(
        task, run_dir=run_dir, model=model, opt=opt, steps=s.max_steps, eval_every=s.eval_every, lr=task.lr, grad_clip=s.max_grad_norm,
        snapshot_every=s.resume_every, checkpoints=set(s.checkpoint_at) | {s.max_steps} | epoch_checkpoints(s, len(data.train)),
        save=save, tag="train", log=log,
    )
