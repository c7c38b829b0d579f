"""Test-suite wiring: markers ``slow``, ``gpu`` and ``vllm``, clean skips without CUDA or vLLM, a guard that
fails the run when no test passed (so CI never reports success with nothing run), and the long-lived heap kept
out of the garbage collector's full scans."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _vllm_available() -> bool:
    if not _cuda_available():
        return False
    try:
        import vllm  # noqa: F401
    except Exception:  # vLLM can fail at import in many ways besides ImportError
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    # Registered here as well as in pyproject.toml so that the markers exist whatever rootdir is used.
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "vllm: needs CUDA and an importable vLLM; skipped without them")
    # Keep CPU tests from oversubscribing the small CI machine.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda_available()
    has_vllm = _vllm_available() if any("vllm" in it.keywords for it in items) else False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    skip_vllm = pytest.mark.skip(reason="needs CUDA and an importable vLLM (pip install '.[vllm]' on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(skip_vllm)


def _freeze_the_heap() -> None:
    """Collect the garbage, then move every surviving object out of the cyclic collector's sight (``gc.freeze``).

    The test process holds half a million long-lived objects (pytest, torch, transformers, sympy, the test
    modules) and every full collection scans them all: one per ``Trainer.train()`` (accelerate's
    ``free_memory`` calls ``gc.collect()``) and the automatic ones, a few tenths of a second each on a 2-core machine. Done
    after collection and after each test module (its module fixtures torn down), so what is frozen is
    long-lived: modules, caches, session fixtures. Frozen objects are still freed when their last reference
    goes; objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    _freeze_the_heap()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    result = yield
    if nextitem is not None and nextitem.path != item.path:  # a module done: freeze what its tests imported
        _freeze_the_heap()
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    passed = len(reporter.stats.get("passed", []))
    if passed == 0 and not session.config.option.collectonly:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_line("stepcredit: no test passed; failing the run on purpose", red=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The reference GSM8K/MATH copies: ``$STEPCREDIT_DATA``, defaulting to ``../shared/data``."""
    path = Path(os.environ.get("STEPCREDIT_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set STEPCREDIT_DATA to the folder holding gsm8k/ and math/)")
    return path


@pytest.fixture(scope="session")
def tiny_sft(tmp_path_factory):
    """One tiny star-graph SFT run shared by every test module that needs a trained checkpoint (analysis,
    exact/MC Q, queries): G(2,3,8), 400 training graphs, a 2x32 GPT, 150 steps (about two seconds).  It has
    learned some of the task, so its probabilities are far from uniform and from 0/1 and Q-values are
    non-trivial.  Yields ``(cfg, ckpt)``: the :class:`stargraph.config.TrainConfig` and ``ckpt_150.pt``."""
    from stargraph.config import DataConfig, ModelConfig, RuntimeConfig, SFTConfig, TrainConfig
    from stargraph.graphs import make_splits
    from stargraph.train import train_sft

    root = tmp_path_factory.mktemp("tiny_sft")
    mp = pytest.MonkeyPatch()
    mp.setenv("STEPCREDIT_CACHE", str(root / "cache"))
    make_splits.cache_clear()
    cfg = TrainConfig(
        seed=0,
        data=DataConfig(degree=2, path_len=3, num_nodes=8, n_train=400, n_test=60, n_eval_train=60),
        model=ModelConfig(n_layer=2, n_head=2, n_embd=32),
        sft=SFTConfig(max_steps=150, batch_size=64, learning_rate=3e-3, warmup_steps=5, eval_every=150, resume_every=0),
        runtime=RuntimeConfig(device="cpu", threads=1, eval_batch_size=512, amp="off"),
    )
    try:
        train_sft(cfg, root / "sft", log=lambda s: None)
    finally:
        mp.undo()
        make_splits.cache_clear()
    return cfg, root / "sft" / "ckpt_150.pt"
