#!/usr/bin/env python3
"""Wake-ups and system calls per RPC of the proxy process, under a fixed load.

CPU time per RPC is noisy on a shared machine; how often the proxy's threads sleep
and are woken, and which system calls it makes, are counts that do not depend on
the neighbours. For each proxy binary (or argument set) this runs
`loadtest local --agents 3 --rate RATE --proxy-bin BIN` and, after a warm-up, two
windows of WINDOW seconds on the proxy process found below loadtest:

  1. untraced: voluntary and involuntary context switches summed over
     /proc/PID/task/*/status (strace would add its own stops to these);
  2. traced: `strace -c -f -p TID...` over every thread, system calls by kind
     (strace slows the proxy: read the counts, not the times; and the slowdown
     batches more events per wake-up, so epoll_wait and accept4 are lower than
     untraced), or with `--tracer perf` the kernel's syscall tracepoints counted
     by `perf stat -p PID`, which barely slow it.

Each is divided by the RPCs the proxy finished in that window
(`sigsci_proxy_rpcs_total`, read from its admin address inside its network
namespace). Run as root from the repository root after `cargo build --release --bins`:

  scripts/measure/wakeups.py [--bed netns] [--rate 1000] [--rounds 2] \\
      base=/work/baseline/sigsci-proxy cur=target/release/sigsci-proxy \\
      'off=target/release/sigsci-proxy --defer-accept=false'

A configuration is NAME=BIN followed by proxy arguments. Rounds run the
configurations in turn (A B C A B C). Prints one row per run and the median of
each configuration; `--json FILE` keeps every figure.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SYSCALLS = ["epoll_wait", "epoll_ctl", "accept4", "recvfrom", "read", "sendto",
            "write", "writev", "close", "setsockopt", "getpeername", "shutdown", "futex"]
EMPTY = ["recvfrom", "read", "accept4"]  # their errors (strace) are EAGAIN: a wasted call


def parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def find_proxy(ancestor, comm, timeout=15.0):
    """The proxy process (named `comm`) below `ancestor` (other sessions run their own)."""
    end = time.time() + timeout
    while time.time() < end:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() != comm:
                        continue
            except OSError:
                continue
            p = int(d)
            while p > 1:
                p = parent_of(p)
                if p == ancestor:
                    return int(d)
        time.sleep(0.05)
    return None


def ctx_switches(pid):
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            pass
    return vol, invol


def admin_addr(pid):
    with open(f"/proc/{pid}/cmdline") as f:
        args = f.read().split("\0")
    return args[args.index("--admin") + 1]


FETCH = ("import urllib.request,sys;"
         "sys.stdout.write(urllib.request.urlopen('http://'+sys.argv[1]+'/metrics',"
         "timeout=2).read().decode())")


def rpcs(pid, admin):
    """sigsci_proxy_rpcs_total over all labels, read in the proxy's network namespace."""
    out = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c",
                          FETCH, admin], capture_output=True, text=True, check=True).stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in out.splitlines()
               if line.startswith("sigsci_proxy_rpcs_total"))


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def strace_counts(pid, window):
    tids = os.listdir(f"/proc/{pid}/task")
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        cmd = ["strace", "-c", "-f", "-o", out.name]
        for t in tids:
            cmd += ["-p", t]
        st = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        time.sleep(window)
        st.send_signal(signal.SIGINT)
        st.wait(timeout=10)
        calls, errors = {}, {}
        for line in out.read().splitlines():
            f = line.split()
            # % time, seconds, usecs/call, calls, [errors,] syscall
            if len(f) >= 5 and re.match(r"^\d", f[0]) and f[-1] != "total":
                calls[f[-1]] = int(f[3])
                errors[f[-1]] = int(f[4]) if len(f) == 6 else 0
        return calls, errors


def perf_counts(pid, window):
    """The same counts from the kernel's syscall tracepoints (`perf stat`): no stop per call,
    so the batching strace's slowdown changes (epoll_wait, accept4) is the real one."""
    events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        subprocess.run(["perf", "stat", "-x,", "-o", out.name, "-e", events, "-p", str(pid),
                        "--", "sleep", str(window)], check=True, stderr=subprocess.DEVNULL)
        calls = {}
        for line in out.read().splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2].startswith("syscalls:sys_enter_") and f[0].isdigit():
                calls[f[2].removeprefix("syscalls:sys_enter_")] = int(f[0])
        return calls, {}


def one_run(args, name, argv):
    bin_, extra = argv[0], argv[1:]
    cmd = [args.loadtest, "local", "--agents", "3", "--rate", str(args.rate),
           "--duration", f"{args.warmup + 2 * args.window + 4}s",
           "--proxy-bin", bin_, "--max-errors", "1000000"]
    if args.bed != "loopback":
        cmd += ["--bed", args.bed]
    cmd += [f"--proxy-arg={a}" for a in extra]
    log = tempfile.NamedTemporaryFile("w+", suffix=".loadtest")
    lt = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        pid = find_proxy(lt.pid, os.path.basename(bin_)[:15])
        if pid is None:
            raise RuntimeError(f"{name}: no sigsci-proxy below loadtest")
        admin = admin_addr(pid)
        time.sleep(args.warmup)
        load = [loadavg()]
        r0, c0 = rpcs(pid, admin), ctx_switches(pid)
        time.sleep(args.window)
        r1, c1, t1 = rpcs(pid, admin), ctx_switches(pid), time.time()
        if args.tracer == "perf":
            calls, errors = perf_counts(pid, args.window)
        else:
            calls, errors = strace_counts(pid, args.window)
        r2, t2 = rpcs(pid, admin), time.time()
        load.append(loadavg())
        lt.wait(timeout=args.window + 60)
    finally:
        if lt.poll() is None:
            lt.send_signal(signal.SIGINT)
            lt.wait(timeout=30)
    log.seek(0)
    tail = [l for l in log.read().splitlines() if "fronts' CPU:" in l or "RPC.PreRequest" in l]
    # The tracer counts for WINDOW seconds once attached; attaching takes a while, so the
    # RPCs it saw are the rate over the whole traced stretch (the load is open-loop) times it.
    n1, n2 = r1 - r0, (r2 - r1) / (t2 - t1) * args.window
    row = {"name": name, "load": load, "rpcs_untraced": n1, "rpcs_traced": n2,
           "vol_per_rpc": (c1[0] - c0[0]) / n1, "invol_per_rpc": (c1[1] - c0[1]) / n1,
           "calls_per_rpc": {k: v / n2 for k, v in calls.items()},
           "empty_per_rpc": {k: errors.get(k, 0) / n2 for k in EMPTY},
           "loadtest": tail}
    return row


def show(row):
    c, e = row["calls_per_rpc"], row["empty_per_rpc"]
    sc = " ".join(f"{k} {c.get(k, 0):.2f}" for k in SYSCALLS if c.get(k))
    em = " ".join(f"{k} {e[k]:.2f}" for k in EMPTY if e.get(k))
    print(f"{row['name']:>6} load {row['load'][0]:.1f}-{row['load'][1]:.1f} "
          f"rpcs {row['rpcs_untraced']:.0f}/{row['rpcs_traced']:.0f} "
          f"vcsw {row['vol_per_rpc']:.2f} ivcsw {row['invol_per_rpc']:.2f} | {sc} | EAGAIN {em}",
          flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("configs", nargs="+", help="NAME=BIN [proxy args...] (one shell word)")
    p.add_argument("--loadtest", default="target/release/loadtest")
    p.add_argument("--bed", default="loopback")
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--warmup", type=float, default=4.0)
    p.add_argument("--window", type=float, default=8.0)
    p.add_argument("--tracer", choices=["strace", "perf"], default="strace",
                   help="strace -c (as asked for; slows the proxy) or perf stat's tracepoints")
    p.add_argument("--json")
    args = p.parse_args()
    configs = []
    for c in args.configs:
        name, rest = c.split("=", 1)
        configs.append((name, rest.split()))
    rows = []
    for _ in range(args.rounds):
        for name, argv in configs:
            rows.append(one_run(args, name, argv))
            show(rows[-1])
    print("medians:")
    for name, _ in configs:
        mine = [r for r in rows if r["name"] == name]
        med = {"name": name, "load": [min(r["load"][0] for r in mine),
                                      max(r["load"][1] for r in mine)],
               "rpcs_untraced": sum(r["rpcs_untraced"] for r in mine),
               "rpcs_traced": sum(r["rpcs_traced"] for r in mine)}
        for k in ("vol_per_rpc", "invol_per_rpc"):
            med[k] = statistics.median(r[k] for r in mine)
        for k in ("calls_per_rpc", "empty_per_rpc"):
            keys = set().union(*(r[k] for r in mine))
            med[k] = {s: statistics.median(r[k].get(s, 0) for r in mine) for s in keys}
        show(med)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
