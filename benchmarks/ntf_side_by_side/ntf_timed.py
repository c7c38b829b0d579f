"""Run Next-Token-Failures' train.py unmodified and time its training loop from the outside.

Usage: python ntf_timed.py --warmup W --out FILE [--ntf-dir DIR] -- <train.py arguments>

How it measures: before train.py runs, ``tqdm.tqdm`` is replaced by a subclass whose ``__iter__``
records a timestamp each time the training loop asks for the next batch (i.e. at the end of the
previous step: forward, loss.item(), backward, optimizer step, zero_grad, tqdm description) and
the size of each batch. Only the first tqdm bar (epoch 0's training bar, ``for x, y in
train_bar``) is recorded; the evaluation bars that train.py opens after the epoch are ignored.
samples/s = (sum of batch sizes of steps W..N-1) / (time from the request of batch W to the
request that ends the epoch); so it includes their DataLoader's per-sample __getitem__ and collate
for those batches, as that is part of their training step. Nothing in train.py is changed.
"""

import argparse
import json
import os
import runpy
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--warmup", type=int, default=5, help="untimed first steps")
ap.add_argument("--out", required=True)
ap.add_argument("--ntf-dir", required=True, help="a checkout of Next-Token-Failures")
ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
ap.add_argument("rest", nargs=argparse.REMAINDER)
a = ap.parse_args()
rest = a.rest[1:] if a.rest[:1] == ["--"] else a.rest

t_start = time.perf_counter()
import torch  # noqa: E402

if a.threads > 0:
    torch.set_num_threads(a.threads)

import tqdm as _tqdm_mod  # noqa: E402

_rec = {"req": [], "bs": [], "seq_len": None, "bars": 0}


class TimedTqdm(_tqdm_mod.tqdm):
    def __iter__(self):
        _rec["bars"] += 1
        if _rec["bars"] != 1:  # evaluation bars: pass through untouched
            yield from super().__iter__()
            return
        it = super().__iter__()
        req, bs = _rec["req"], _rec["bs"]
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                req.append(t)
                _rec["train_end"] = t
                return
            req.append(t)
            x = item[0]
            bs.append(int(x.shape[0]))
            _rec["seq_len"] = int(x.shape[1])
            yield item


_tqdm_mod.tqdm = TimedTqdm

os.chdir(a.ntf_dir)
sys.path.insert(0, a.ntf_dir)
sys.argv = ["train.py"] + rest
g = runpy.run_path(os.path.join(a.ntf_dir, "train.py"), run_name="__main__")
t_end = time.perf_counter()

req, bs = _rec["req"], _rec["bs"]
n = len(bs)
w = a.warmup
if n <= w:
    raise SystemExit(f"only {n} training steps ran; need more than --warmup {w}")
timed_s = req[n] - req[w]
timed_samples = sum(bs[w:])
model = g["model"]
args = g["args"]
res = {
    "ntf_samples_per_s": timed_samples / timed_s,
    "steps_total": n,
    "warmup_steps": w,
    "timed_steps": n - w,
    "timed_samples": timed_samples,
    "timed_s": timed_s,
    "train_step_s": timed_s / (n - w),
    "batch_size": args.batch_size,
    "batch_sizes_seen": sorted(set(bs)),
    "input_seq_len": _rec["seq_len"],
    "threads": torch.get_num_threads(),
    "device": str(g["device"]),
    "dtype_note": "CPU: ctx=nullcontext (float32), GradScaler disabled (no CUDA)",
    "model": {"n_layer": args.n_layer, "n_head": args.n_head, "n_embd": args.n_embd,
              "block_size": args.block_size, "vocab_size": args.vocab_size,
              "params": sum(p.numel() for p in model.parameters())},
    "setup_s_before_first_batch": req[0] - t_start,
    "total_wall_s": t_end - t_start,
    "train_py_args": rest,
    "method": "in-process timestamps at each batch request of epoch 0's training loop (tqdm wrapper); "
              "samples = sum of batch sizes of the timed steps",
}
with open(a.out, "w") as f:
    json.dump(res, f, indent=2)
print(json.dumps(res, indent=2))
