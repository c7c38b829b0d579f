"""``stargraph rescore``: the current metrics of saved checkpoints, without retraining.

Every metric of :func:`stargraph.evaluate.evaluate` (among them the round-2 ones: Next-Token-Failures'
teacher-forced per-token accuracy ``forced_token_acc`` and where the critical position's mass goes) is
recomputed for every checkpoint (``*.pt``, except ``resume.pt``) found in the given run folders
(searched recursively: a sweep or reproduce folder works), on the train and test graphs rebuilt from
the checkpoint's own data record.  Each folder holding checkpoints gets ``rescore.jsonl`` (one record
per checkpoint, sorted by step) and ``rescore.csv`` next to them; a folder whose ``rescore.jsonl``
already covers all its checkpoints is skipped unless ``force``.

    stargraph rescore runs/study/quick3 runs/study/screen_quick
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from . import runio
from .evaluate import evaluate
from .graphs import GraphSpec
from .queries import load_query_data
from .reproduce import write_csv

Log = Callable[[str], None]


def checkpoint_folders(paths: list[str | Path]) -> dict[Path, list[Path]]:
    """``{folder: [checkpoints]}`` of every folder under ``paths`` that holds ``*.pt`` files."""
    out: dict[Path, list[Path]] = {}
    for root in map(Path, paths):
        files = [root] if root.is_file() else sorted(root.rglob("*.pt"))
        for f in files:
            if f.suffix == ".pt" and f.name != "resume.pt":
                out.setdefault(f.parent, []).append(f)
    return out


def eval_sets_of(spec_rec: dict, device: torch.device, cache: dict) -> dict:
    """The train / test (and mixed-family) evaluation sets a checkpoint was scored on, rebuilt."""
    from .posttrain import query_options
    from .config import PostDataConfig

    key = json.dumps(spec_rec, sort_keys=True, default=str)
    if key not in cache:
        spec = GraphSpec(int(spec_rec["degree"]), int(spec_rec["path_len"]), int(spec_rec["num_nodes"]))
        qd = load_query_data(spec, int(spec_rec["n_train"]), int(spec_rec["n_test"]), int(spec_rec["data_seed"]), query_options(spec_rec, PostDataConfig()), device)
        n_eval = int(spec_rec.get("n_eval_train", min(len(qd.train_main), len(qd.test))))
        cache[key] = {"train": qd.train_main.subset(slice(0, n_eval)), "test": qd.test, **qd.extra_eval}
    return cache[key]


def rescore_checkpoint(path: str | Path, *, device: str = "cpu", eval_batch_size: int = 4096, bok_k: int = 5, cache: dict | None = None) -> dict:
    """One record: the checkpoint's name, step, origin and every metric on its train and test sets."""
    dev = torch.device(device)
    model, ck = runio.load_checkpoint(path, dev)
    sets = eval_sets_of(ck["spec"], dev, {} if cache is None else cache)
    rec = {"checkpoint": Path(path).name, "step": int(ck["step"]), **{f"extra_{k}": v for k, v in ck.get("extra", {}).items() if isinstance(v, (int, float, str))}}
    rec.update(evaluate(model, sets, batch_size=eval_batch_size, amp="off", bok_k=bok_k))
    return rec


def rescore(paths: list[str | Path], *, device: str = "cpu", eval_batch_size: int = 4096, bok_k: int = 5, force: bool = False, log: Log = print) -> dict[Path, list[dict]]:
    """Rescore every checkpoint under ``paths``; write ``rescore.jsonl`` / ``rescore.csv`` per folder."""
    cache: dict = {}
    done: dict[Path, list[dict]] = {}
    folders = checkpoint_folders(paths)
    if not folders:
        raise FileNotFoundError(f"no checkpoints (*.pt) under {', '.join(map(str, paths))}")
    for folder, ckpts in sorted(folders.items()):
        out = folder / "rescore.jsonl"
        old = runio.read_jsonl(out)
        if not force and {r.get("checkpoint") for r in old} >= {c.name for c in ckpts}:
            log(f"[rescore] {folder}: up to date")
            done[folder] = old
            continue
        recs = sorted((rescore_checkpoint(c, device=device, eval_batch_size=eval_batch_size, bok_k=bok_k, cache=cache) for c in ckpts), key=lambda r: (r["step"], r["checkpoint"]))
        runio.atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in recs))
        write_csv(folder / "rescore.csv", recs)
        for r in recs:
            log(f"[rescore] {folder}/{r['checkpoint']}: step {r['step']} test acc {r['test/acc']:.3f} forced token acc {r['test/forced_token_acc']:.3f}")
        done[folder] = recs
    return done
