"""A small teaching copy of a finished run folder (issue 11's cached artefact).

A full run of the ``arith`` preset (``scripts/arith_artefact.sh``) is about 30 MB: three models, every
shard next to its merged file, every sample's token ids. A notebook needs far less: pi_sft, a slice of its
samples with their grades, per-step advantages, first pits and pairs, the generator's ground truth for
those questions, a few test questions, and the run's summaries. :func:`pack_teaching_run` copies exactly
that into a new folder with the run folder's layout (so ``mathreason.diagnostics.pit_truth`` and the
readers work on it unchanged) and writes ``MANIFEST.json`` with what was kept, what was dropped, and the
sha256 of every file.

The slice is the first ``questions`` training questions in the order of ``grade/graded.jsonl`` (the
sampling order, fixed by the run's seed): no selection on outcomes. pi_sft's weights can be stored in
bfloat16 (half the size) and in shards of at most ``max_shard_mb`` (huggingface_hub's sharded safetensors
with its index, which ``from_pretrained`` reads); the manifest records the dtype, and the notebook must load
them as float32.

The course reads the copy committed under ``notebooks/artefacts/arith-teach`` (about 3.5 MB, no file over
1 MB), so lesson 4 runs in CI without training; ``bash scripts/arith_artefact.sh`` remakes it
(``TEACH_DIR=notebooks/artefacts/arith-teach``).

    python -m mathreason.artefact runs/arith-artefact runs/arith-teach --questions 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mathreason.runs import read_jsonl, sha256_file, write_jsonl_atomic

__all__ = ["COMMITTED_TEACH_DIR", "pack_teaching_run", "teaching_dir", "verify_teaching_dir"]


COMMITTED_TEACH_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "artefacts" / "arith-teach"


def teaching_dir() -> Path:
    """Where the course's teaching copy lives: ``$STEPCREDIT_TEACH_DIR``, else the copy committed with the
    course (``notebooks/artefacts/arith-teach`` of the checkout)."""
    env = os.environ.get("STEPCREDIT_TEACH_DIR")
    return Path(env) if env else COMMITTED_TEACH_DIR


def verify_teaching_dir(path: str | Path) -> dict[str, Any]:
    """Check a teaching copy against its ``MANIFEST.json`` (every listed file present with its sha256, no
    unlisted file). Returns the manifest; raises ``ValueError`` naming the first file that differs."""
    path = Path(path)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    listed = manifest["files"]
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file() and p.name != "MANIFEST.json"}
    for rel in sorted(set(listed) | present):
        if rel not in listed:
            raise ValueError(f"{path / rel}: not listed in {path / 'MANIFEST.json'}")
        if rel not in present:
            raise ValueError(f"{path / rel}: listed in {path / 'MANIFEST.json'} but missing")
        if sha256_file(path / rel) != listed[rel]["sha256"]:
            raise ValueError(f"{path / rel}: sha256 differs from {path / 'MANIFEST.json'} (field files.{rel}.sha256)")
    return manifest

_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_SUMMARIES = ("config.yaml", "metrics.jsonl", "advantages/summary.json", "grade/summary.json", "pairs/summary.json",
              "eval/summary.json", "eval/sft/arith/summary.json", "eval/pref-per_step_dpo/arith/summary.json")


def _copy_model(src: Path, dst: Path, dtype: str, max_shard_mb: float) -> None:
    import torch
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import load_file

    dst.mkdir(parents=True)
    for name in _MODEL_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    weights = src / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: pi_sft has no model.safetensors (did the sft stage finish?)")
    tensors = load_file(str(weights))
    if dtype != "float32":
        target = getattr(torch, dtype)
        tensors = {k: (v.to(target) if v.is_floating_point() else v) for k, v in tensors.items()}
    # huggingface_hub's sharded layout (model-0000i-of-0000n.safetensors + index) when over max_shard_mb;
    # one tensor larger than a shard gets a shard of its own
    save_torch_state_dict(tensors, dst, max_shard_size=int(max_shard_mb * 1e6), metadata={"format": "pt"})


def pack_teaching_run(src: str | Path, dst: str | Path, *, questions: int = 200, test_questions: int = 100,
                      model_dtype: str = "bfloat16", max_shard_mb: float = 1.0) -> dict[str, Any]:
    """Copy the teaching slice of run folder ``src`` into ``dst`` (created; must not exist). Returns the manifest."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        raise FileExistsError(f"{dst}: already exists; remove it first")
    if model_dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"model_dtype {model_dtype!r}: expected float32, bfloat16 or float16")
    for need in ("grade/graded.jsonl", "advantages/advantages.jsonl", "data/dsyn.jsonl", "sft/model"):
        if not (src / need).exists():
            raise FileNotFoundError(f"{src / need}: missing; run the pipeline through the pairs stage first")
    graded = read_jsonl(src / "grade" / "graded.jsonl")
    keep: list[str] = []
    for r in graded:
        if r["problem_id"] not in keep:
            keep.append(r["problem_id"])
        if len(keep) > questions:
            keep.pop()
            break
    kept = set(keep)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent if dst.parent.exists() else None))
    counts: dict[str, int] = {}

    def subset(rel: str, key: str = "problem_id", limit: int | None = None) -> None:
        if not (src / rel).exists():
            return
        rows = [r for r in read_jsonl(src / rel) if (r[key] in kept if limit is None else True)]
        rows = rows[:limit] if limit is not None else rows
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(tmp / rel, rows)
        counts[rel] = len(rows)

    try:
        subset("grade/graded.jsonl")
        subset("advantages/advantages.jsonl")
        subset("data/dsyn.jsonl", key="id")
        subset("data/arith_train.jsonl", key="id")
        subset("data/arith_test.jsonl", key="id", limit=test_questions)
        for p in sorted((src / "pairs").glob("*.jsonl")):
            subset(f"pairs/{p.name}")
        for rel in _SUMMARIES:
            if (src / rel).exists():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / rel, tmp / rel)
        _copy_model(src / "sft" / "model", tmp / "sft" / "model", model_dtype, max_shard_mb)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "source_run": str(src),
            "questions": len(keep),
            "selection": f"the first {len(keep)} training questions in the order of grade/graded.jsonl (no selection on outcomes)",
            "test_questions": counts.get("data/arith_test.jsonl", 0),
            "rows": counts,
            "model": {"path": "sft/model", "stored_dtype": model_dtype, "load_as": "float32", "max_shard_mb": max_shard_mb},
            "dropped": ["base model", "per-step DPO model (a notebook makes its own update from pi_sft)", "shards and rounds",
                        "sample/ (its rows are in grade/graded.jsonl)", "checkpoints", "reference log-prob caches",
                        "other questions' rows"],
            "files": {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files},
        }
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mathreason.artefact", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="a finished run folder (e.g. runs/arith-artefact)")
    ap.add_argument("dst", help="the teaching copy to create (must not exist)")
    ap.add_argument("--questions", type=int, default=200, help="training questions kept (the first in sampling order)")
    ap.add_argument("--test-questions", type=int, default=100, help="test questions kept (the first of the split)")
    ap.add_argument("--model-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"], help="dtype pi_sft's weights are stored in")
    ap.add_argument("--max-shard-mb", type=float, default=1.0, help="largest safetensors shard of pi_sft's weights (MB)")
    a = ap.parse_args(argv)
    m = pack_teaching_run(a.src, a.dst, questions=a.questions, test_questions=a.test_questions, model_dtype=a.model_dtype,
                          max_shard_mb=a.max_shard_mb)
    print(f"{a.dst}: {m['questions']} questions, {m['total_bytes'] / 1e6:.1f} MB ({', '.join(f'{k} {v}' for k, v in m['rows'].items())})")


if __name__ == "__main__":
    main()
