#!/usr/bin/env python3
"""The overload matrix: every `loadtest/scenarios/overload-*.toml` on both agent shapes (FIFO
workers and processor sharing), on the release build, and one table of what an overload run is
judged by: the pool's capacity, the load offered (× capacity), the inspected calls as a fraction of
the capacity, the p99 of calls not inspected and of inspected PreRequests, the worst second's
inspected fraction in the scenario's windows, each flow's inspected fraction, each agent's share
of timely answers against its capacity share, the proxies' CPU per call offered, and the verdict.

Usage: scripts/measure/overload.py [--proxy-bin PATH] [--shapes fifo,ps] [--bed loopback|netns]
                                   [NAME ...]   (default: every overload-* scenario)
Run from the repository root after `cargo build --release --bins`. `--proxy-bin` measures
another proxy against the same harness (e.g. a release build of main). The full output and the
JSON reports go to a folder ($OVERLOAD_LOGS or a new temporary one, printed at the end).
Standard library only.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")


def scenario_windows(path):
    """(from, to) in seconds of each [[expect.inspected_window]] (tomllib when there is one)."""
    try:
        import tomllib
    except ImportError:
        return []
    with open(path, "rb") as f:
        s = tomllib.load(f)
    out = []
    for w in s.get("expect", {}).get("inspected_window", []):
        out.append((parse_s(w["from"]), parse_s(w["to"]) if "to" in w else None))
    return out


def parse_s(text):
    for unit, f in (("ms", 1e-3), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def worst_second(by_second, windows):
    """The lowest inspected fraction of a whole second inside any window, or None."""
    worst = None
    for lo, hi in windows:
        end = len(by_second) if hi is None else min(len(by_second), int(hi))
        for i in range(int(-(-lo // 1)), end):
            v = by_second[i] if by_second[i] is not None else 0.0
            worst = v if worst is None else min(worst, v)
    return worst


def run(args, name, shape, logs):
    path = os.path.join(ROOT, "loadtest", "scenarios", name + ".toml")
    out = os.path.join(logs, f"{name}.{shape}")
    cmd = [args.loadtest, "local", "--bed", args.bed, "--scenario", path,
           "--agent-shape", shape, "--json", out + ".json"]
    if args.proxy_bin:
        cmd += ["--proxy-bin", args.proxy_bin]
    start = time.time()
    with open(out + ".log", "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    secs = time.time() - start
    try:
        with open(out + ".json") as f:
            r = json.load(f)
    except (OSError, ValueError):
        return [name, shape] + ["-"] * 9 + [f"no report (exit {rc}, {secs:.0f} s)"]
    o = r["overload"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
    ms = lambda v: "-" if v is None else f"{v:.1f}"
    flows = " ".join(pct(f["inspected_fraction"]) for f in o["flows"]) or "-"
    agents = " ".join(f'{pct(a["served_share"])}/{pct(a["capacity_share"])}' for a in o["agents"])
    cap = o["capacity_rpc_s"]
    verdict = "PASS" if not r["failures"] else "FAIL: " + "; ".join(r["failures"])[:160]
    return [
        name.removeprefix("overload-"), shape, f"{cap:.0f}",
        f'{o["offered_rpc_s"] / cap:.2f}' if cap else "-",
        pct(o["capacity_fraction"]), ms(o["uninspected_p99_ms"]), ms(o["inspected_pre_p99_ms"]),
        pct(worst_second(o["inspected_by_second"], scenario_windows(path))),
        flows, agents,
        ms(o["front_cpu_us_per_call_offered"]), verdict,
    ]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*")
    p.add_argument("--proxy-bin")
    p.add_argument("--loadtest", default=os.path.join(BIN, "loadtest"))
    p.add_argument("--shapes", default="fifo,ps")
    p.add_argument("--bed", default="loopback")
    args = p.parse_args()
    names = args.names or sorted(
        os.path.basename(f)[:-5]
        for f in glob.glob(os.path.join(ROOT, "loadtest", "scenarios", "overload-*.toml")))
    logs = os.environ.get("OVERLOAD_LOGS") or tempfile.mkdtemp(prefix="overload.")
    os.makedirs(logs, exist_ok=True)
    head = ["scenario", "shape", "cap RPC/s", "offered x", "inspected % cap", "uninsp p99 ms",
            "insp pre p99 ms", "worst s in window %", "flows insp %", "agents timely/cap %",
            "front CPU us/call", "verdict"]
    rows = []
    for name in names:
        for shape in args.shapes.split(","):
            row = run(args, name, shape, logs)
            rows.append(row)
            print(" | ".join(row), flush=True)
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    failed = sum(1 for r in rows if not r[-1].startswith("PASS"))
    print(f"\nlogs: {logs}; {failed} of {len(rows)} runs failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
