#!/usr/bin/env python3
"""Node-local proxies against the Deployment, side by side on the multi-host bed.

Three topologies (`loadtest local --bed netns --topology ...`): `deployment` (manifests/base:
proxy replicas on hosts of their own behind the Service VIP), `node-local` (overlays/node-local:
each proxy on its app node, the VIP sending a node's connections to its own proxy) and
`node-local-socket` (plus components/node-local-socket: the module calls its node's proxy over a
Unix socket). For each, in rounds whose order rotates (the machine is noisy: compare medians of
the same run):

- a fixed-rate run with one proxy replica: the module's PreRequest p50/p99 and the proxy's CPU
  per RPC answered (from /proc, `fronts' CPU` in the run's log);
- `proxy-host-vanishes.toml` (2 replicas; replica 1's host dropped for 4 s while the VIP still
  lists it): calls the module lost per second of that window;
- with `--restart`, `restart-proxy.toml`: the calls a node-local proxy's restart costs its node
  (the socket variant rolls maxSurge 0, maxUnavailable 1).

Usage (as root, after `cargo build --release --bins`; LOADTEST and PROXY_BIN choose other
binaries):
    scripts/measure/node-local.py [--rounds 3] [--rate 1000] [--duration 20s] [--restart]
Prints a Markdown table of medians (and every run's figures). Standard library only.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
LT = os.environ.get("LOADTEST", os.path.join(TARGET, "release", "loadtest"))
# The proxy binary [default: the one next to the loadtest].
PROXY = os.environ.get("PROXY_BIN")
TOPOLOGIES = ["deployment", "node-local", "node-local-socket"]


def run(topology, args):
    cmd = [LT, "local", "--bed", "netns", "--topology", topology] + args
    if PROXY:
        cmd += ["--proxy-bin", PROXY]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    if "RESULT" not in text:
        sys.exit(f"{' '.join(cmd)} printed no RESULT:\n{text[-3000:]}")
    return text


def fixed_rate(topology, rate, duration):
    text = run(topology, ["--agents", "3", "--proxies", "1", "--rate", str(rate),
                          "--duration", duration])
    m = re.search(r"PreRequest p50 (\d+) µs p99 (\d+) µs", text)
    cpu = re.search(r"fronts' CPU: [\d.]+ s for (\d+) RPCs answered, ([\d.]+) µs per RPC", text)
    errors = re.search(r"errors (\d+) \(refused", text)
    return {"p50": int(m.group(1)), "p99": int(m.group(2)), "cpu": float(cpu.group(2)),
            "rpcs": int(cpu.group(1)), "errors": int(errors.group(1))}


def marks(text):
    """Failed calls after each step's mark: {step: failed}."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"mark: t=\d+ms (\w+) proxy \d+ \(then (\d+) failed calls", text)}


def proxy_host(topology):
    text = run(topology, ["--scenario", "loadtest/scenarios/proxy-host-vanishes.toml"])
    f = marks(text)
    # The cut lasts from 3 s to the unlisting at 7 s.
    return {"lost_per_s": f.get("CutProxy", 0) / 4.0, "after_unlist": f.get("UnlistProxy", 0)}


def restart(topology):
    text = run(topology, ["--scenario", "loadtest/scenarios/restart-proxy.toml"])
    errors = re.search(r"errors (\d+) \(refused (\d+)\)", text)
    return {"failed": int(errors.group(1)), "refused": int(errors.group(2))}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=1000)
    p.add_argument("--duration", default="20s")
    p.add_argument("--restart", action="store_true")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: the bed makes network namespaces")
    res = {t: {"fixed": [], "host": [], "restart": []} for t in TOPOLOGIES}
    for r in range(a.rounds):
        order = TOPOLOGIES[r % 3:] + TOPOLOGIES[:r % 3]
        for t in order:
            f = fixed_rate(t, a.rate, a.duration)
            h = proxy_host(t)
            res[t]["fixed"].append(f)
            res[t]["host"].append(h)
            line = f"round {r + 1} {t}: {f} {h}"
            if a.restart and t != "deployment":
                x = restart(t)
                res[t]["restart"].append(x)
                line += f" restart {x}"
            print(line, flush=True)
    tcp_cpu = med(res["node-local"]["fixed"], "cpu")
    print()
    print(f"Medians of {a.rounds} rounds; fixed rate {a.rate} tx/s for {a.duration}, "
          "3 agents, 1 proxy; proxy-host-vanishes at 1,000 tx/s with 2 replicas.")
    print()
    print("| topology | module PreRequest p50 µs | p99 µs | proxy CPU µs per RPC | "
          "vs node-local TCP | failed calls (fixed rate) | lost per s, other proxy host "
          "vanished | failed after unlisting |")
    print("|---|---|---|---|---|---|---|---|")
    for t in TOPOLOGIES:
        fx, h = res[t]["fixed"], res[t]["host"]
        print(f"| {t} | {med(fx, 'p50'):.0f} | {med(fx, 'p99'):.0f} | {med(fx, 'cpu'):.1f} | "
              f"{med(fx, 'cpu') / tcp_cpu:.2f}x | {sum(x['errors'] for x in fx)} | "
              f"{med(h, 'lost_per_s'):.0f} | {med(h, 'after_unlist'):.0f} |")
    if a.restart:
        print()
        for t in TOPOLOGIES[1:]:
            rs = res[t]["restart"]
            print(f"- {t}: a proxy restart cost its node {[x['failed'] for x in rs]} failed "
                  f"calls ({[x['refused'] for x in rs]} refused) at 1,000 tx/s")


if __name__ == "__main__":
    main()
