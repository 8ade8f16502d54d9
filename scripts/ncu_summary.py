#!/usr/bin/env python3
"""ncu_summary.py: per-kernel-name totals of an Nsight Compute CSV (ncu --csv --metrics
gpu__time_duration.sum,dram__bytes_read.sum,...), divided by the number of steps it covers.

    python3 scripts/ncu_summary.py ncu.csv [steps]

Prints, per kernel name and grid size, launches per step, µs per launch, µs per step, MB read per launch and the DRAM read
rate while the kernel runs (GB/s), largest total first, then the sum of the kernels' durations.
"""
import csv
import io
import sys
from collections import defaultdict


def rows(path):
    text = open(path, errors="replace").read()
    # ncu prints its own log lines before the CSV header
    start = text.find('"ID"')
    return csv.DictReader(io.StringIO(text[start:]))


def scale(unit):
    return {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6,
            "byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}.get(unit, 1.0)


def main():
    path = sys.argv[1]
    steps = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    launches = {}
    for r in rows(path):
        key = (r["ID"], r["Kernel Name"])
        d = launches.setdefault(key, {"regs": "", "grid": "", "block": ""})
        v = r["Metric Value"].replace(",", "")
        name, unit = r["Metric Name"], r.get("Metric Unit", "")
        if name == "gpu__time_duration.sum":
            d["us"] = float(v) * scale(unit)
        elif name == "dram__bytes_read.sum":
            d["mbr"] = float(v) * scale(unit)
        elif name == "dram__bytes_write.sum":
            d["mbw"] = float(v) * scale(unit)
        elif name == "launch__registers_per_thread":
            d["regs"] = v
        elif name == "launch__grid_size":
            d["grid"] = v
        elif name == "launch__block_size":
            d["block"] = v
    agg = defaultdict(lambda: {"n": 0, "us": 0.0, "mbr": 0.0, "mbw": 0.0, "shapes": set()})
    for (_, kname), d in launches.items():
        a = agg["%s g%s" % (kname.split("(")[0], d["grid"])]
        a["n"] += 1
        a["us"] += d.get("us", 0.0)
        a["mbr"] += d.get("mbr", 0.0)
        a["mbw"] += d.get("mbw", 0.0)
        a["shapes"].add("b%s r%s" % (d["block"], d["regs"]))
    total = sum(a["us"] for a in agg.values())
    print("%-26s %8s %8s %9s %9s %8s  %s" % ("kernel, grid", "per step", "us each", "us/step", "MB each", "GB/s", "block/regs"))
    for k, a in sorted(agg.items(), key=lambda kv: -kv[1]["us"]):
        each = a["us"] / a["n"]
        mb = a["mbr"] / a["n"]
        print("%-26s %8.1f %8.2f %9.1f %9.2f %8.0f  %s" % (k, a["n"] / steps, each, a["us"] / steps, mb,
                                                          mb / each * 1e3 if each else 0, " ".join(sorted(a["shapes"])[:3])))
    print("sum of kernel durations per step: %.1f us over %d launches" % (total / steps, sum(a["n"] for a in agg.values()) / steps))


if __name__ == "__main__":
    main()
