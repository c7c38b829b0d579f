"""Prints the round-2 markdown tables of docs/stargraph_study.md from docs/results/stargraph_study2.json.

    python docs/results/stargraph_tables.py decomp                  # every variant of the sweep, one table each
    python docs/results/stargraph_tables.py online --variant online

One row per (objective, start step): the seeds of its finished points and the **last** evaluation's mean ± sd
over seeds (never the best; the last column is each point's highest test accuracy at any evaluation, the
maximum over seeds, so a transient transition would show). Sweeps that mix shorter path lengths add the test
accuracy of each mixed family (test_l<l>/acc). Below each table: the SFT checkpoints the arms start from and
the first pools' statistics. Only the committed JSON is read, so the tables match it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

JSON = Path(__file__).with_name("stargraph_study2.json")
NAMES = {
    "sft": "continued SFT (control)", "sft_critical": "critical-token SFT (control)", "per_step_dpo": "per-step DPO",
    "per_step_dpo_sft": "per-step DPO + SFT", "awr": "AWR, exact advantages",
}
ORDER = ["sft", "sft_critical", "per_step_dpo", "per_step_dpo_sft", "awr"]


def _ms(d: dict | None, key: str) -> str:
    s = (d or {}).get(key)
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.3f}" if s.get("sd") is None else f"{s['mean']:.3f} ± {s['sd']:.3f}"


def _m(d: dict, key: str) -> str:
    s = d.get(key)
    return "-" if not s or s.get("mean") is None else f"{s['mean']:.2f}"


def table(sweep: dict, variant: str) -> str:
    groups = [g for g in sweep["groups"].values() if g.get("last") and g["settings"]["variant"] == variant]  # finished points only
    if not groups:
        raise SystemExit(f"no group of variant {variant!r}")
    fams = sorted({k.split("/")[0] for g in groups for k in g["last"] if k.startswith("test_l") and k.endswith("/acc")})
    head = ["arm", "from step", "seeds", "train acc", "test acc", "test acc, source given", "test crit. acc",
            "test crit. mass: correct / other child / non-child", "test forced token acc"]
    head += [f"test acc G(2,{f[6:]},20)" for f in fams] + ["max test acc (any eval)"]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---:|" * 4 + "---|---:|" + "---:|" * len(fams) + "---:|"]
    key = lambda g: (g["settings"]["init_step"], ORDER.index(g["settings"]["objective"]) if g["settings"]["objective"] in ORDER else 99)
    for g in sorted(groups, key=key):
        st, last = g["settings"], g["last"]
        mass = " / ".join(_m(last, k) for k in ("test/crit_prob", "test/crit_p_other_child", "test/crit_p_non_child"))
        mx = g.get("max_test_acc", {}).get("values") or []
        row = [NAMES.get(st["objective"], st["objective"]), str(st["init_step"]), str(len(g["seeds"])),
               _ms(last, "train/acc"), _ms(last, "test/acc"), _ms(last, "test/acc_given_source"), _ms(last, "test/crit_acc"),
               mass, _ms(last, "test/forced_token_acc")]
        row += [_ms(last, f"{f}/acc") for f in fams] + [f"{max(mx):.3f}" if mx else "-"]
        lines.append("| " + " | ".join(row) + " |")
    sft_group = groups[0]["settings"]["sft_group"]
    sft = sweep["sft"].get(sft_group, {})
    notes = []
    for step, s in sorted(sft.get("at_step", {}).items(), key=lambda kv: int(kv[0])):
        notes.append(f"SFT at step {step} ({len(s['seeds'])} seeds): train {_ms(s, 'train/acc')}, test {_ms(s, 'test/acc')}, "
                     f"test crit. {_ms(s, 'test/crit_acc')}" + "".join(f", {f} {_ms(s, f + '/acc')}" for f in fams))
    for g in sorted(groups, key=key):
        fp = g.get("first_pool") or {}
        if g["settings"]["objective"] == "per_step_dpo" and fp:
            notes.append(f"first pools from step {g['settings']['init_step']}: sample acc {_m(fp, 'pool/sample_acc')}, critical pits at the "
                         f"critical token {_m(fp, 'pool/pit_at_critical')}, of them on the other child {_m(fp, 'pool/crit_pit_other_child')}")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", help="sweep name under sweeps (e.g. decomp, online)")
    ap.add_argument("--variant", action="append", help="variant(s) to print (default: every variant of the sweep)")
    ap.add_argument("--json", type=Path, default=JSON)
    a = ap.parse_args(argv)
    sweep = json.loads(a.json.read_text())["sweeps"][a.sweep]
    variants = a.variant or sorted({g["settings"]["variant"] for g in sweep["groups"].values() if g.get("settings")})
    st = sweep["status"]
    print(f"<!-- {a.sweep}: {st['finished_points']} of {st['planned_points']} points finished -->")
    for v in variants:
        print(f"\n**{v}**\n\n{table(sweep, v)}")


if __name__ == "__main__":
    main()
