"""``stargraph posttrain``: continue from an SFT checkpoint with one objective on sampled pools.

The pool holds responses sampled from the current (or starting) policy on training graphs (or fresh
graphs), their correctness, the Q-values of their step prefixes (exact or Monte-Carlo) and first
pits.  Positives are the true paths (the only correct responses).  From the pool each objective
builds its batches:

- ``sft`` / ``sft_critical``: next-token prediction on the SFT training graphs (all target tokens,
  or the critical token only); the control arm;
- ``rft``: SFT on the pool's correct samples (rejection-sampling fine-tuning);
- ``dpo``: standard DPO, true path vs a whole wrong sample (:func:`shared.pairs.random_pairs` or
  :func:`shared.pairs.max_edit_distance_pairs`);
- ``per_step_dpo`` (+ ``_sft``, ``_dpop``, ``_ipo``): pairs from :func:`shared.pairs.first_pit_pairs`
  with pits from :func:`shared.advantages.first_pit`, loss :func:`shared.losses.per_step_dpo_loss`;
- ``awr``: :func:`shared.losses.advantage_weighted_loss` with step advantages
  :func:`shared.advantages.step_advantages` on every sample;
- ``sft_pairs`` / ``sft_critical_pairs``: per-step DPO's pairs without their negatives, SFT on the true path of
  each pair (every target token / the critical token only): the same positives on the same graphs (those where
  the policy erred, once per pair), the control that separates what per-step DPO's *selection* of graphs does
  from what its rejected side does.

Queries (``data``, :mod:`stargraph.queries`): by default those of the SFT run (round 1: each training
graph with its own goal); ``data.goals`` / ``data.mix_path_lens`` switch to structured goals (every
graph once per arm), goals inside an arm, or mixed shorter families.  A pool then holds ``pool.graphs``
graphs with all their queries, and the ``sft`` / ``sft_critical`` controls train on the same query set.
``pool.arm_negatives`` adds one constructed negative per other arm to every query.

Each objective is an entry of :data:`stargraph.objectives.SPECS` (its pool, whether it needs Q, its
batch type and its loss); batches are the typed :class:`shared.objectives.SequenceBatch` /
:class:`shared.objectives.PreferenceBatch`.  The reference of the preference losses is the starting
checkpoint (frozen); its token log-probs are computed once per pool.  The training loop is
:func:`stargraph.loop.run_loop`: a run snapshots at every evaluation (model, optimizer, RNG streams,
the current pool's batches) and a killed run resumes from its last snapshot, ending as an
uninterrupted run would.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from shared.advantages import first_pit, step_advantages, steps_to_tokens
from shared.logprobs import token_logprobs
from shared.objectives import ObjectiveOutput, ObjectiveParams, PreferenceBatch, SequenceBatch, awr_objective
from shared.pairs import PairStats, collate_pair_rows, first_pit_pairs, max_edit_distance_pairs, pair_token_rows, random_pairs

from . import runio
from .config import DataConfig, PostDataConfig, PostTrainConfig, check_mix
from .evaluate import evaluate, forward_rows, source_children
from .graphs import GraphSpec
from .loop import CyclicSampler, EpochSampler, lr_at, make_optimizer, pair_target_logps, run_loop, setup_runtime, target_logps
from .model import GPT, autocast
from .objectives import spec_of
from .rollouts import StepQ, exact_step_q, mc_step_q, on_path, sample_responses, true_path_step_q
from .queries import QueryOptions, QuerySet, fresh_queries, load_query_data
from .tokenizer import TokenizedGraphs

Log = Callable[[str], None]

Batch = Union[SequenceBatch, PreferenceBatch]


@dataclass
class Pool:
    """Sampled responses of one pool round; index tensors live on the CPU."""

    graphs: TokenizedGraphs
    graph_M: torch.Tensor
    resp_MS: torch.Tensor
    correct_M: torch.Tensor
    q: StepQ | None = None
    pit_M: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)


class PostTrainer:
    """One post-training run: pools, batches and losses of ``cfg.objective``; the :class:`stargraph.loop.Task` of :meth:`run`."""

    def __init__(self, cfg: PostTrainConfig, run_dir: Path, log: Log = print) -> None:
        self.cfg, self.run_dir, self.log = cfg, Path(run_dir), log
        self.objective_spec = spec_of(cfg.objective)
        self.params = ObjectiveParams.of(cfg)
        rt = cfg.runtime
        self.device = setup_runtime(rt)
        self.model, ck = runio.load_checkpoint(cfg.init, self.device)
        self.ref, _ = runio.load_checkpoint(cfg.init, self.device)
        self.ref.eval().requires_grad_(False)
        self.init_step = int(ck["step"])
        sp = ck["spec"]
        self.ck_spec = dict(sp)
        self.spec = GraphSpec(sp["degree"], sp["path_len"], sp["num_nodes"])
        self.data_seed = int(sp["data_seed"])
        self.qd = load_query_data(self.spec, int(sp["n_train"]), int(sp["n_test"]), self.data_seed, query_options(sp, cfg.data), self.device)
        self.train = self.qd.train_main  # the main family's training graphs with their own goals
        self.test = self.qd.test
        # The queries of the pools and the data of the sft / sft_critical controls (the same set).
        self.queries = self.qd.train_q
        self.sft_data = self.queries.data
        self.sft_mask = None if self.sft_data.target_len_N is None else self.sft_data.target_mask_NL
        n_eval = int(sp.get("n_eval_train", min(len(self.train), len(self.test))))
        self.eval_sets = {"train": self.train.subset(slice(0, n_eval)), "test": self.test, **self.qd.extra_eval}
        self.seen_keys = self.qd.seen_keys[0]
        self.P, self.T, self.S = self.train.P, self.train.T, self.spec.path_len - 1
        self.pad = self.spec.num_nodes + 3
        # Seeded streams: torch for sampling and batches, numpy for pair choices.
        self.gen_sample = torch.Generator(device=self.device).manual_seed(cfg.seed * 104729 + 3)
        self.gen_batch = torch.Generator().manual_seed(cfg.seed * 104729 + 5)
        self.rng = np.random.default_rng([cfg.seed, 11])
        self.rng_goals = np.random.default_rng([cfg.seed, 13])  # random_node goals of fresh pools
        self.opt = make_optimizer(self.model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.round = 0
        # The state of a run (see run / state): the current pool's batch, its sampler, running means.
        self.needs_pool = self.objective_spec.pool != "sft"
        self.sft_sampler: EpochSampler | None = None  # the sft / sft_critical controls' batches (made by run)
        self.batch: Batch | None = None
        self.sampler: CyclicSampler | None = None
        self.pool_stats: dict = {}
        self.pool_time = 0.0
        self.acc: dict[str, list[torch.Tensor]] = {}
        self.skipped = 0

    # ------------------------------------------------------------ pools

    def build_pool(self) -> Pool:
        cfg, pc = self.cfg, self.cfg.pool
        rt = cfg.runtime
        if pc.policy == "fresh":
            qs = self._fresh_queries()
            n_graphs = qs.n_groups
            gidx = torch.arange(len(qs))
        else:
            # pool.graphs graphs, each with all of its queries (one per graph in round 1)
            qs = self.queries
            n_graphs = min(pc.graphs, qs.n_groups)
            chosen = torch.randperm(qs.n_groups, generator=self.gen_batch)[:n_graphs].sort().values
            gidx = chosen if self.qd.options.trivial else torch.isin(qs.group_N, chosen).nonzero().squeeze(1)
        graphs = qs.data
        sampler = self.model if (pc.sampler == "current" and pc.policy != "fixed") else self.ref
        tries = pc.max_tries if pc.policy == "balanced" else pc.samples_per_graph
        graph_M = gidx.repeat_interleave(tries)
        resp = sample_responses(sampler, graphs, graph_M, temperature=pc.temperature, generator=self.gen_sample, amp=rt.amp, batch_size=rt.eval_batch_size).cpu()
        correct = on_path(graphs, graph_M, resp)[:, -1]
        stats = {"pool/graphs": n_graphs, "pool/sample_acc": float(correct.double().mean())}
        if not self.qd.options.trivial:
            stats["pool/queries"] = int(gidx.numel())
        if pc.policy == "balanced":
            graph_M, resp, correct = self._balance(gidx, graph_M, resp, correct, tries)
        if pc.arm_negatives:
            g_add, r_add = arm_negatives(qs, gidx, self.pad)
            graph_M, resp = torch.cat([graph_M, g_add]), torch.cat([resp, r_add])
            correct = torch.cat([correct, torch.zeros(g_add.numel(), dtype=torch.bool)])
            stats["pool/arm_negatives"] = int(g_add.numel())
        pool = Pool(graphs, graph_M, resp, correct)
        stats.update({"pool/samples": int(resp.shape[0]), "pool/negatives": int((~correct).sum())})
        if self.objective_spec.needs_q:
            pool.q = self._step_q(sampler, graphs, graph_M, resp)
            mask = graphs.step_mask(graph_M)
            pool.pit_M = first_pit(pool.q.q_MS, mask, threshold=cfg.pit_threshold)
            neg = ~correct
            pits = pool.pit_M[neg]
            if pits.numel():
                stats["pool/neg_with_pit"] = float((pits >= 0).double().mean())
                stats["pool/pit_at_critical"] = float((pits == 0).double().mean())
                # pits that really are the first wrong step (exact Q makes this 1)
                first_wrong = (~on_path(graphs, graph_M[neg], resp[neg])).to(torch.int8).argmax(1)
                stats["pool/pit_is_first_error"] = float((pits == first_wrong).double().mean())
                # at a critical pit, is the rejected token the other child (informative about which child
                # is right) or a non-child token (only about answering a child at all)?
                crit_rows = neg.nonzero().squeeze(1)[pits == 0]
                if crit_rows.numel():
                    kids = source_children(graphs.tokens_NT[graph_M[crit_rows].to(graphs.tokens_NT.device)].cpu(), self.P, self.spec.degree)
                    stats["pool/crit_pit_other_child"] = float((kids == resp[crit_rows, :1]).any(1).double().mean())
        pool.stats = stats
        self.round += 1
        return pool

    def _balance(self, gidx, graph_M, resp, correct, tries):
        """Per graph with any negative: exactly ``samples_per_graph`` negatives (drawn with
        replacement from the ones found), plus its correct samples among the first
        ``samples_per_graph`` tries."""
        k = self.cfg.pool.samples_per_graph
        G = gidx.numel()
        neg = (~correct).view(G, tries)
        has = neg.any(1)
        # choose k negatives per graph uniformly among its negatives (seeded)
        w = neg.double()
        w[~has] = 1.0
        pick = torch.multinomial(w, k, replacement=True, generator=self.gen_batch)  # G, k
        rows = (torch.arange(G).unsqueeze(1) * tries + pick)[has].reshape(-1)
        first = (torch.arange(G).unsqueeze(1) * tries + torch.arange(k)).reshape(-1)
        pos_rows = first[correct[first]]
        keep = torch.cat([rows, pos_rows])
        return graph_M[keep], resp[keep], correct[keep]

    def _step_q(self, sampler: GPT, graphs: TokenizedGraphs, graph_M, resp) -> StepQ:
        cfg, rt = self.cfg, self.cfg.runtime
        # Q is measured under the policy that produced the pool (the rollout policy).
        if cfg.q_estimator == "exact":
            # one teacher-forced pass over the pool's graphs only (the training set may be large)
            ug, inv = torch.unique(graph_M, return_inverse=True)
            sub = graphs.subset(ug.to(graphs.tokens_NT.device))
            tq = true_path_step_q(sampler, sub, batch_size=rt.eval_batch_size, amp=rt.amp, bok_k=cfg.bok_k)
            return exact_step_q(tq, sub, inv, resp)
        k = cfg.bok_k if cfg.bok_k > 0 else cfg.mc_rollouts
        return mc_step_q(sampler, graphs, graph_M, resp, k=k, bok=cfg.bok_k > 0, generator=self.gen_sample, amp=rt.amp, batch_size=rt.eval_batch_size)

    # ------------------------------------------------------------ batches from a pool

    def make_batches(self, pool: Pool) -> Batch | None:
        """The training batch of the objective's pool (on the device); None when it has no example (or
        the objective trains on the SFT data)."""
        spec = self.objective_spec
        if spec.pool == "sft":
            return None
        if spec.pairs:
            return self._pair_batches(pool)
        keep = pool.correct_M.nonzero().squeeze(1) if spec.pool == "correct" else torch.arange(pool.resp_MS.shape[0])
        return self._seq_batches(pool, keep, adv=spec.loss is awr_objective)

    def _prompt(self, graphs: TokenizedGraphs, g: int) -> list[int]:
        return graphs.tokens_NT[g, : self.P + 1].tolist()

    def _pair_batches(self, pool: Pool) -> PreferenceBatch | None:
        cfg = self.cfg
        stats = PairStats()
        graphs = pool.graphs
        g_np = pool.graph_M.numpy()
        order = np.argsort(g_np, kind="stable")
        bounds = np.flatnonzero(np.diff(g_np[order])) + 1
        rows, row_q = [], []
        path_np = graphs.path_NL.cpu().numpy()
        n_steps = graphs.step_mask().sum(1).numpy()  # steps of each query (S unless a goal is inside an arm)
        resp_np = pool.resp_MS.numpy()
        correct_np = pool.correct_M.numpy()
        pit_np = pool.pit_M.numpy() if pool.pit_M is not None else None
        for grp in np.split(order, bounds):
            if grp.size == 0:
                continue
            g = int(g_np[grp[0]])
            neg_rows = [int(r) for r in grp if not correct_np[r]]
            if not neg_rows:
                continue
            k = int(n_steps[g])
            positives = [tuple(int(x) for x in path_np[g, 1 : 1 + k])]
            negatives = [tuple(int(x) for x in resp_np[r, :k]) for r in neg_rows]
            if self.objective_spec.pool == "pairs":  # whole responses
                if cfg.pairing == "random":
                    pairs = random_pairs(positives, negatives, seed=self.rng)
                else:
                    pairs = max_edit_distance_pairs(positives, negatives)
            else:
                pits = [int(pit_np[r]) for r in neg_rows]
                pairs = first_pit_pairs(positives, negatives, pits, construction=cfg.construction, seed=self.rng, stats=stats)
            prompt = self._prompt(graphs, g)
            rows.extend(pair_token_rows(prompt, pr) for pr in pairs)
            row_q.extend([g] * len(pairs))
        n = len(rows)
        pool.stats["pool/pairs"] = n
        if stats.negatives_without_pit or stats.negatives_without_continuation:
            pool.stats["pool/dropped_no_pit"] = stats.negatives_without_pit
            pool.stats["pool/dropped_no_continuation"] = stats.negatives_without_continuation
        if n == 0:
            return None
        # Rows prompt + prefix + side, padded to T; the masks mark each side's own steps (not the shared
        # prefix). Targets are the row positions P .. T - 1 (see _logps), so the masks are sliced there.
        b = collate_pair_rows(rows, pad_id=self.pad, length=self.T)
        chosen = b.chosen_BT.to(self.device)
        rejected = b.rejected_BT.to(self.device)
        if not torch.equal(chosen[:, : self.P + 1], rejected[:, : self.P + 1]):  # step_loss runs the shared part once
            raise RuntimeError("posttrain: the two sides of a pair must share the prompt and the source")
        # Every chosen sequence is the true path (prefixes lie on it): the SFT term covers the whole
        # target, source included (nothing else anchors the source copy that evaluation decodes).
        sft_mask = graphs.target_mask_NL[torch.tensor(row_q, device=graphs.tokens_NT.device)].to(self.device)
        chosen_mask = b.chosen_mask_BT[:, self.P :].contiguous().to(self.device)
        if not self.objective_spec.needs_ref:
            # sft_pairs / sft_critical_pairs: per-step DPO's positives without its negatives, scored as the
            # sft / sft_critical controls score the true path
            chosen_mask = self._scored_tokens(sft_mask)
        return PreferenceBatch(
            chosen_BT=chosen,
            rejected_BT=rejected,
            chosen_mask_BL=chosen_mask,
            rejected_mask_BL=b.rejected_mask_BT[:, self.P :].contiguous().to(self.device),
            ref_chosen_BL=self._ref_logps(chosen) if self.objective_spec.needs_ref else None,
            ref_rejected_BL=self._ref_logps(rejected) if self.objective_spec.needs_ref else None,
            sft_mask_BL=sft_mask,
        )

    @torch.no_grad()
    def _ref_logps(self, seqs: torch.Tensor) -> torch.Tensor:
        """Reference token log-probs of the target positions, one forward pass per distinct row
        (chosen sides repeat the same true path once per negative of a graph)."""
        uniq, inv = torch.unique(seqs, dim=0, return_inverse=True)
        out = []
        bs = forward_rows(self.cfg.runtime.eval_batch_size, self.device)
        for i in range(0, uniq.shape[0], bs):
            s = uniq[i : i + bs]
            with autocast(self.device, self.cfg.runtime.amp):
                logits = self.ref(s[:, :-1], logits_from=self.P - 1)
            out.append(token_logprobs(logits.float(), s[:, self.P :]))
        return torch.cat(out)[inv]

    def _seq_batches(self, pool: Pool, keep: torch.Tensor, adv: bool) -> SequenceBatch | None:
        n = int(keep.numel())
        pool.stats["pool/sequences"] = n
        if n == 0:
            return None
        g = pool.graph_M[keep]
        seq = pool.graphs.tokens_NT[g.to(self.device)].clone()
        seq[:, self.P + 1 :] = pool.resp_MS[keep].to(self.device)
        # The whole target, source included (its advantage is 0: AWR weight 1).
        mask = pool.graphs.target_mask_NL[g.to(pool.graphs.tokens_NT.device)].to(self.device)
        if not adv:
            return SequenceBatch(seq, mask)
        q = pool.q
        smask = pool.graphs.step_mask(g)
        a_MS = step_advantages(q.q_MS[keep], q.v0_M[keep], smask)
        step_ids = torch.cat([torch.full((n, 1), -1), torch.arange(self.S).expand(n, -1)], dim=1)
        pool.stats["pool/adv_critical_mean"] = float(a_MS[:, 0].mean())
        return SequenceBatch(seq, mask, adv_BL=steps_to_tokens(a_MS, step_ids).float().to(self.device))

    # ------------------------------------------------------------ losses

    def _logps(self, seqs: torch.Tensor) -> torch.Tensor:
        return target_logps(self.model, seqs, self.P, self.device, self.cfg.runtime.amp)

    def _scored_tokens(self, target_mask_BL: torch.Tensor) -> torch.Tensor:
        """The true paths' positions an NLL objective scores: every target token, or (``tokens: critical``)
        the critical token only (the first node after the source)."""
        if self.objective_spec.tokens != "critical":
            return target_mask_BL
        mask = torch.zeros_like(target_mask_BL)
        mask[:, 1] = True
        return mask

    def _fresh_queries(self) -> QuerySet:
        """This round's newly drawn queries (``pool.policy: fresh``): the pools and the sft / sft_critical
        controls of the same seed draw the same ones."""
        return fresh_queries(self.qd, self.cfg.pool.graphs, self.data_seed, self.cfg.seed * 100_000 + self.round, rng=self.rng_goals, device=self.device)

    def _fresh_sft_data(self) -> None:
        """The sft / sft_critical controls under ``pool.policy: fresh``: the true paths of the graphs a pool
        of this round would hold, rebuilt at the same steps."""
        qs = self._fresh_queries()
        self.round += 1
        self._set_sft_data(qs.data)

    def _set_sft_data(self, data: TokenizedGraphs) -> None:
        """The controls' data and a new epoch sampler over it (the same seeded generator)."""
        self.sft_data = data
        self.sft_mask = None if data.target_len_N is None else data.target_mask_NL
        self.sft_sampler = EpochSampler(len(data), min(self.cfg.batch_size, len(data)), self.sft_sampler.g, self.device)

    def _sft_batch(self, idx: torch.Tensor) -> SequenceBatch:
        """SFT-data rows ``idx`` scored on their target tokens, or on the critical token only."""
        seq = self.sft_data.tokens_NT[idx]
        target = torch.ones(seq.shape[0], self.T - self.P, dtype=torch.bool, device=seq.device)
        if self.sft_mask is not None:
            target[:] = self.sft_mask[idx]
        return SequenceBatch(seq, self._scored_tokens(target))

    def step_loss(self, batch: Batch | None, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of rows ``idx`` of ``batch`` (of the SFT data for the ``sft`` pool) and its diagnostics."""
        spec = self.objective_spec
        batch = self._sft_batch(idx) if spec.pool == "sft" else batch.select(idx)
        if isinstance(batch, PreferenceBatch) and not spec.needs_ref:  # NLL of the chosen sides: negatives unscored
            pi_c = self._logps(batch.chosen_BT)
            logps = (pi_c, torch.zeros_like(pi_c))
        elif isinstance(batch, PreferenceBatch):
            # both sides share the prompt and the source (checked in _pair_batches): that part runs once
            logps = pair_target_logps(self.model, batch.chosen_BT, batch.rejected_BT, self.P, self.device, self.cfg.runtime.amp)
        else:
            logps = self._logps(batch.tokens_BT)
        out = spec(batch, logps, self.params)
        return out.loss, self._diagnostics(batch, logps, out)

    def _diagnostics(self, batch: Batch, logps, out: ObjectiveOutput) -> dict[str, torch.Tensor]:
        if isinstance(batch, SequenceBatch) or not self.objective_spec.needs_ref:  # NLL objectives (also on pairs' positives)
            diag = {"loss": out.loss.detach()}
            if self.objective_spec.loss is awr_objective:
                diag["awr_clipped"] = out.out.clipped_fraction_B.mean()
            return diag
        pi_c = logps[0].detach()
        o = out.out
        diag = {
            "pref_loss": out.term.detach(),
            "margin": o.margins_B.mean(),
            "reward_acc": o.accuracies_B.mean(),
            "chosen_reward": o.chosen_rewards_B.mean(),
            "rejected_reward": o.rejected_rewards_B.mean(),
            "chosen_logp": (pi_c * batch.sft_mask_BL).sum(1).mean(),
            "source_logp": pi_c[:, 0].mean(),
        }
        if out.sft_term is not None:
            diag["sft_term"] = out.sft_term.detach()
        diag["loss"] = out.loss.detach()
        return diag

    # ------------------------------------------------------------ the loop's task

    def step(self, step: int) -> torch.Tensor | None:
        """The loss of optimizer step ``step``, rebuilding the pool when it is due (None: an empty pool)."""
        cfg, pc = self.cfg, self.cfg.pool
        rebuild = step == 0 or (pc.policy != "fixed" and pc.resample_every > 0 and step % pc.resample_every == 0)
        if self.needs_pool and rebuild:
            tp = time.perf_counter()
            pool = self.build_pool()
            self.batch = self.make_batches(pool)
            self.pool_stats = dict(pool.stats)
            self.sampler = CyclicSampler(len(self.batch), cfg.batch_size, self.gen_batch) if self.batch is not None else None
            self.pool_time += time.perf_counter() - tp
            self.model.train()
        if not self.needs_pool and pc.policy == "fresh" and rebuild:
            self._fresh_sft_data()
        if self.needs_pool and self.sampler is None:
            self.skipped += 1
            return None
        idx = self.sft_sampler.next() if self.sft_sampler is not None else self.sampler.next()
        loss, diag = self.step_loss(self.batch, idx)
        for k, v in diag.items():
            self.acc.setdefault(k, []).append(v.float())
        return loss

    def record(self, step: int) -> dict:
        cfg, rt = self.cfg, self.cfg.runtime
        rec: dict = {"step": step, "init_step": self.init_step, "objective": cfg.objective}
        for k, v in self.acc.items():
            rec[f"train_{k}"] = float(torch.stack(v).mean())
        rec["empty_steps"] = self.skipped
        rec.update(self.pool_stats)
        rec.update(evaluate(self.model, self.eval_sets, batch_size=rt.eval_batch_size, amp=rt.amp, bok_k=rt.bok_k))
        rec["pool_time_s"] = self.pool_time
        self.acc, self.skipped = {}, 0
        return rec

    def message(self, rec: dict) -> str:
        return (
            f"[{self.cfg.objective}] step {rec['step']:5d} loss {rec.get('train_loss', float('nan')):.4f} "
            f"train acc {rec['train/acc']:.3f} | test acc {rec['test/acc']:.3f} crit {rec['test/crit_acc']:.3f} "
            f"lookup {rec.get('test/lookup_acc', float('nan')):.3f}"
            + (f" | pairs {self.pool_stats.get('pool/pairs', '-')}" if self.needs_pool else "")
            + f" | {rec['time_s']:.0f}s"
        )

    def state(self) -> dict:
        """What the next steps depend on besides model and optimizer: RNG streams, pool round, the current
        pool's batch and sampler, running means."""
        return {
            "round": self.round,
            "gen_sample": self.gen_sample.get_state(),
            "gen_batch": self.gen_batch.get_state(),
            "rng": self.rng.bit_generator.state,
            "rng_goals": self.rng_goals.bit_generator.state,
            "batch": None if self.batch is None else (type(self.batch).__name__, {k: v.cpu() for k, v in self.batch.tensors().items()}),
            "sampler": None if self.sampler is None else self.sampler.state(),
            "sft_sampler": None if self.sft_sampler is None else self.sft_sampler.state(),
            # the fresh graphs of the sft / sft_critical controls under pool.policy fresh (else the fixed set)
            "sft_data": self.sft_data.to("cpu") if self.cfg.pool.policy == "fresh" and not self.needs_pool else None,
            "pool_stats": dict(self.pool_stats),
            "pool_time": self.pool_time,
            "acc": {k: [t.cpu() for t in v] for k, v in self.acc.items()},
            "skipped": self.skipped,
        }

    def load_state(self, st: dict) -> None:
        self.round = int(st["round"])
        self.gen_sample.set_state(st["gen_sample"])
        self.gen_batch.set_state(st["gen_batch"])
        self.rng.bit_generator.state = st["rng"]
        self.rng_goals.bit_generator.state = st["rng_goals"]
        self.batch = None
        if st["batch"] is not None:
            kind, tensors = st["batch"]
            cls = {c.__name__: c for c in (SequenceBatch, PreferenceBatch)}[kind]
            self.batch = cls.from_tensors(tensors, self.device)
        self.sampler = None
        if st["sampler"] is not None:
            self.sampler = CyclicSampler(len(self.batch), self.cfg.batch_size, self.gen_batch)
            self.sampler.load(st["sampler"])
        if st.get("sft_data") is not None:
            self._set_sft_data(st["sft_data"].to(self.device))
        if st["sft_sampler"] is not None:
            self.sft_sampler.load(st["sft_sampler"])
        self.pool_stats = dict(st["pool_stats"])
        self.pool_time = float(st["pool_time"])
        self.acc = {k: [t.to(self.device) for t in v] for k, v in st["acc"].items()}
        self.skipped = int(st["skipped"])

    def run(self) -> dict:
        """Train (resuming from the run folder's snapshot when there is one), write ``final.pt`` and the
        ``DONE`` marker; return the last metrics record."""
        cfg = self.cfg
        if not self.needs_pool:
            self.sft_sampler = EpochSampler(len(self.sft_data), cfg.batch_size, torch.Generator(device=self.device).manual_seed(cfg.seed * 7919 + 1), self.device)

        def save(step: int) -> None:
            runio.save_checkpoint(self.run_dir / "final.pt", self.model, step=step, spec=self.ck_spec, extra={"init": cfg.init, "objective": cfg.objective})

        return run_loop(
            self, run_dir=self.run_dir, model=self.model, opt=self.opt, steps=cfg.max_steps, eval_every=cfg.eval_every,
            lr=lambda step: lr_at(step, lr=cfg.learning_rate, warmup=cfg.warmup_steps, total=cfg.max_steps), grad_clip=cfg.max_grad_norm,
            snapshot_every=cfg.eval_every, checkpoints={cfg.max_steps} if cfg.save_final else (), save=save,
            tag=cfg.objective, log=self.log,
        )


def query_options(spec: dict, over: PostDataConfig) -> QueryOptions:
    """The queries of a post-training run: the checkpoint's SFT data options, changed by ``over``."""
    goals = spec.get("goals", "leaf") if over.goals == "checkpoint" else over.goals
    mix = spec.get("mix_path_lens", []) if over.mix_path_lens is None else over.mix_path_lens
    check_mix(list(mix), int(spec["path_len"]), "posttrain data.mix_path_lens")
    n_mix = int(spec.get("mix_n_train", DataConfig.mix_n_train) if over.mix_n_train is None else over.mix_n_train)
    n_test = int(spec.get("mix_n_test", DataConfig.mix_n_test) if over.mix_n_test is None else over.mix_n_test)
    return QueryOptions(goals, tuple(int(l) for l in mix), n_mix, n_test)


def arm_negatives(qs: QuerySet, q_idx: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Constructed negatives of queries ``q_idx``: for every other arm of a query's graph, the walk along
    that arm as deep as the query's goal (padded after it).  Returns ``(graph_M, resp_MS)``."""
    arms = qs.arms_NdL[q_idx.cpu()]  # Q, d, L (goal arm first)
    Q, d, L = arms.shape
    if d < 2 or Q == 0:
        return torch.empty(0, dtype=torch.long), torch.empty(0, L - 1, dtype=torch.long)
    steps = qs.data.step_mask(q_idx)  # Q, S
    other = arms[:, 1:, 1:]  # Q, d-1, S
    resp = torch.where(steps.unsqueeze(1), other, torch.full_like(other, pad))
    return q_idx.cpu().repeat_interleave(d - 1), resp.reshape(Q * (d - 1), L - 1)


def posttrain(cfg: PostTrainConfig, run_dir: str | Path, log: Log = print) -> dict:
    """Run one post-training arm in ``run_dir`` (resumed when killed, skipped when already complete)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if runio.is_done(run_dir):
        recs = runio.read_jsonl(run_dir / "metrics.jsonl")
        log(f"[posttrain] {run_dir} is complete; skipping")
        return recs[-1] if recs else {}
    if not cfg.init:
        raise ValueError("posttrain: init (an SFT checkpoint path) is required")
    runio.write_config(run_dir, cfg)
    return PostTrainer(cfg, run_dir, log).run()
