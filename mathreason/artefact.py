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
bfloat16 (half the size); the manifest records the dtype, and the notebook must load them as float32.

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

__all__ = ["pack_teaching_run", "teaching_dir"]


def teaching_dir() -> Path:
    """Where the course's teaching copy lives (outside git, like every checkpoint): ``$STEPCREDIT_TEACH_DIR``,
    else ``runs/arith-artefact-teach`` of the checkout (what ``bash scripts/arith_artefact.sh`` writes)."""
    env = os.environ.get("STEPCREDIT_TEACH_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "runs" / "arith-artefact-teach"

_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_SUMMARIES = ("config.yaml", "metrics.jsonl", "advantages/summary.json", "grade/summary.json", "pairs/summary.json",
              "eval/summary.json", "eval/sft/arith/summary.json", "eval/pref-per_step_dpo/arith/summary.json")


def _copy_model(src: Path, dst: Path, dtype: str) -> None:
    import torch
    from safetensors.torch import load_file, save_file

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
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})


def pack_teaching_run(src: str | Path, dst: str | Path, *, questions: int = 200, test_questions: int = 100,
                      model_dtype: str = "bfloat16") -> dict[str, Any]:
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
        _copy_model(src / "sft" / "model", tmp / "sft" / "model", model_dtype)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {
            "source_run": str(src),
            "questions": len(keep),
            "selection": f"the first {len(keep)} training questions in the order of grade/graded.jsonl (no selection on outcomes)",
            "test_questions": counts.get("data/arith_test.jsonl", 0),
            "rows": counts,
            "model": {"path": "sft/model", "stored_dtype": model_dtype, "load_as": "float32"},
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
    a = ap.parse_args(argv)
    m = pack_teaching_run(a.src, a.dst, questions=a.questions, test_questions=a.test_questions, model_dtype=a.model_dtype)
    print(f"{a.dst}: {m['questions']} questions, {m['total_bytes'] / 1e6:.1f} MB ({', '.join(f'{k} {v}' for k, v in m['rows'].items())})")


if __name__ == "__main__":
    main()
