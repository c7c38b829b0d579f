"""Minimal stand-in for wandb (not installed; NTF's train.py imports it unconditionally but only
uses it when --use_wandb is given, which the benchmark never does)."""


class _Run:
    name = None


run = _Run()


def init(*args, **kwargs):
    raise RuntimeError("wandb stub: real wandb is not installed; do not pass --use_wandb")


def log(*args, **kwargs):
    raise RuntimeError("wandb stub: real wandb is not installed; do not pass --use_wandb")
