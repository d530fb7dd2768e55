#!/usr/bin/env python3
"""The hybrid grid as a Markdown table (docs/hybrid.md), from scripts/hybrid-grid.sh's
output folder: per cell the wall time (process start to exit, the best of the runs) of
cpu, opencl and hybrid, hybrid over the better single backend, and time to first token
(ttft_ms of `generate --json`: process start to the first generated token).
    python3 scripts/hybrid_table.py OUTDIR"""
import json, sys, pathlib, collections

out = pathlib.Path(sys.argv[1])
walls = collections.defaultdict(list)
ttft = collections.defaultdict(list)
switches = {}
for line in (out / "walls.jsonl").read_text().splitlines():
    w = json.loads(line)
    name = w["name"]
    if not name.startswith("grid-"):
        continue
    _, be, p, g, _rep = name.split("-")
    key = (be, int(p[1:]), int(g[1:]))
    walls[key].append(w["wall_us"] / 1e6)
    try:
        j = json.loads((out / f"{name}.json").read_text().strip().splitlines()[-1])
    except Exception:
        continue
    if j.get("ttft_ms") is not None:
        ttft[key].append(j["ttft_ms"] / 1e3)
    if be == "hybrid":
        sw = j.get("switches", [])
        switches[key] = "; ".join(f"{s['from']}→{s['to']} at token {s['token']} ({s['ms']:.1f} ms)" for s in sw) or "none (stays on cpu)"

print("| prompt | gen | cpu s | opencl s | hybrid s | hybrid / best | ttft cpu s | ttft opencl s | ttft hybrid s | hybrid ttft / cpu | switches |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
cells = sorted({(p, g) for (_, p, g) in walls})
for p, g in cells:
    b = {be: min(walls[(be, p, g)]) if walls[(be, p, g)] else float("nan") for be in ("cpu", "opencl", "hybrid")}
    t = {be: min(ttft[(be, p, g)]) if ttft[(be, p, g)] else float("nan") for be in ("cpu", "opencl", "hybrid")}
    best = min(b["cpu"], b["opencl"])
    print(f"| {p} | {g} | {b['cpu']:.2f} | {b['opencl']:.2f} | {b['hybrid']:.2f} | {b['hybrid']/best:.2f} | "
          f"{t['cpu']:.2f} | {t['opencl']:.2f} | {t['hybrid']:.2f} | {t['hybrid']/t['cpu']:.2f} | {switches.get(('hybrid', p, g), '')} |")
