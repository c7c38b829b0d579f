"""The course's star-graph runs (notebooks 06 and 07): one small SFT run and short post-training arms from it,
sized to take seconds on one CPU thread, with the settings both lessons share.

G(2, 4, 20) as the ``quick`` preset, 2000 training graphs (500 of them and 500 test graphs evaluated), a 4-layer,
64-wide, 2-head GPT: it learns the lookup in about 200 steps at lr 1e-3 (seeds 0-2; the quick preset's 3 x 96
model needs about 250 on seed 0), and at step 250 it has started to memorise its training graphs. The same config and seed give the same weights, so
lesson 7 starts from lesson 6's checkpoint by training it again.
"""

from __future__ import annotations

from pathlib import Path

from .config import DataConfig, ModelConfig, PoolConfig, PostTrainConfig, RuntimeConfig, SFTConfig, TrainConfig

SFT_STEPS = 250
"""SFT steps of the lessons' checkpoint."""

RUNTIME = RuntimeConfig(device="cpu", threads=1, amp="off", eval_batch_size=1024)
"""One CPU thread, float32 (a small model and short sequences: a second thread buys little)."""


def train_config(*, max_steps: int = SFT_STEPS, eval_every: int = 50, seed: int = 0) -> TrainConfig:
    """The lessons' SFT run (``stargraph.train.train_sft``); ``eval_every`` changes the log, not the weights."""
    return TrainConfig(
        seed=seed,
        data=DataConfig(degree=2, path_len=4, num_nodes=20, n_train=2000, n_test=500, n_eval_train=500),
        model=ModelConfig(n_layer=4, n_head=2, n_embd=64),
        sft=SFTConfig(max_steps=max_steps, batch_size=128, learning_rate=1e-3, warmup_steps=100, eval_every=eval_every,
                      checkpoint_at=[], resume_every=0),
        runtime=RUNTIME,
    )


def posttrain_config(init: str | Path, objective: str, *, max_steps: int = 30, eval_every: int = 10, seed: int = 0,
                     graphs: int = 256, **overrides) -> PostTrainConfig:
    """A short post-training arm from ``init`` (``stargraph.posttrain.posttrain``): lr 3e-4, beta 0.1, batch 64,
    one on-policy pool of ``graphs`` training graphs x 4 samples built at the start (the same pool for every
    arm of the same seed), exact Q, first pits, ``full`` pairs; the final model is saved (``final.pt``)."""
    kw = dict(
        init=str(init), objective=objective, construction="full", beta=0.1, learning_rate=3e-4, batch_size=64,
        max_steps=max_steps, eval_every=eval_every, seed=seed, save_final=True,
        pool=PoolConfig(policy="resampled", graphs=graphs, samples_per_graph=4, resample_every=0),
        runtime=RUNTIME,
    )
    kw.update(overrides)
    return PostTrainConfig(**kw)
