#!/usr/bin/env python3
"""Prints the medians of `cargo bench -p balance --bench pick` as a Markdown table.

Reads criterion's estimates under target/criterion/pick_<size>/<variant>/<algorithm>/new.
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
rows = {}
for est in root.glob("pick_*/*/*/new/estimates.json"):
    size_dir, variant, algorithm = est.parts[-5], est.parts[-4], est.parts[-3]
    size = int(size_dir.split("_")[1])
    median_ns = json.loads(est.read_text())["median"]["point_estimate"]
    rows[(size, algorithm, variant)] = median_ns

variants = ["picker", "picker-2-threads", "pool-pick-finish", "pool-pick-finish-2-threads",
            "nginx-naive", "nginx-naive-mutex-2-threads"]


def fmt(ns):
    if ns is None:
        return ""
    return f"{ns / 1000:.1f} µs" if ns >= 1000 else f"{ns:.1f} ns"


print("| backends | algorithm | " + " | ".join(variants) + " |")
print("|---|---|" + "---|" * len(variants))
for size in sorted({k[0] for k in rows}):
    for algorithm in sorted({k[1] for k in rows if k[0] == size}):
        cells = [fmt(rows.get((size, algorithm, v))) for v in variants]
        if any(cells):
            print(f"| {size} | {algorithm} | " + " | ".join(cells) + " |")

floor = root / "floor"
for name in ("atomic-fetch-add", "atomic-fetch-add-2-threads"):
    est = floor / name / "new" / "estimates.json"
    if est.exists():
        print(f"\nfloor, {name}: {fmt(json.loads(est.read_text())['median']['point_estimate'])}", end="")
print()
