#!/usr/bin/env python3
"""The proxy under its pod's memory limit, with every memory-bound limit pushed at once:
can any input OOM-kill it? Run through scripts/measure/memory-limit.sh, which says what it shows.

The proxy runs in a memory cgroup of its own (a child of this script's cgroup, v2 or v1) limited
to --limit, so the kernel OOM-kills it there exactly as in a container. Against it, all at the
same time and for --duration:

- idle: --connections idle connections (nothing sent), from several 127.0.1.x source addresses;
- partial: --partial-senders connections each sending 3.9 MB of a 4,000,000-byte frame and
  holding it, reconnecting whenever the proxy resets them (the frame-read timeout or the
  partial-frame budget), so the budget stays full;
- in flight: --big-senders connections each sending complete 3.9 MB PreRequests to agents that
  read and never answer, a new one as soon as the last is answered (error frame), so the
  in-flight budget stays full. With --deaf-agents N, N of the 3 agents read nothing at all: the
  proxy's send queues to them fill (up to 8 MiB per agent connection, outside every budget).

Loopback only: every socket is on 127.0.0.0/8. Standard library only; root for the cgroup and
the file descriptor limit. Prints one RESULT line (JSON) at the end.
"""

import argparse
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import free_port, pre_request, wait_http  # noqa: E402

STOP = threading.Event()
FRAME_BODY = 3_900_000  # under the 4 MiB --max-frame-bytes


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


# ---- the cgroup ----

class Cgroup:
    """A child memory cgroup of this process's own, v2 where the memory controller is there."""

    def __init__(self, limit):
        lines = open("/proc/self/cgroup").read().splitlines()
        v2 = next((l.split(":", 2)[2] for l in lines if l.startswith("0::")), None)
        v1 = next((l.split(":", 2)[2] for l in lines
                   if "memory" in l.split(":", 2)[1].split(",")), None)
        if v2 is not None and (v1 is None or os.path.exists(f"/sys/fs/cgroup{v2}/memory.current")):
            self.v2 = True
            parent = f"/sys/fs/cgroup{v2}".rstrip("/")
        elif v1 is not None:
            self.v2 = False
            parent = f"/sys/fs/cgroup/memory{v1}".rstrip("/")
        else:
            sys.exit("memory-limit: no memory cgroup found")
        self.path = f"{parent}/sigsci-measure-{os.getpid()}"
        os.mkdir(self.path)
        if self.v2 and not os.path.exists(f"{self.path}/memory.max"):
            os.rmdir(self.path)
            sys.exit("memory-limit: the memory controller is not enabled below this cgroup "
                     f"({parent}: its cgroup.subtree_control lacks memory); run the script from a "
                     "cgroup that delegates it, or in a container limited to LIMIT")
        if self.v2:
            self.write("memory.max", str(limit))
            self.write("memory.swap.max", "0", optional=True)
        else:
            self.write("memory.limit_in_bytes", str(limit))
            self.write("memory.swappiness", "0", optional=True)

    def write(self, name, value, optional=False):
        try:
            with open(f"{self.path}/{name}", "w") as f:
                f.write(value)
        except OSError:
            if not optional:
                raise

    def read(self, name):
        with open(f"{self.path}/{name}") as f:
            return f.read()

    def procs(self):
        return f"{self.path}/cgroup.procs"

    def usage(self):
        return int(self.read("memory.current" if self.v2 else "memory.usage_in_bytes"))

    def peak(self):
        try:
            return int(self.read("memory.peak" if self.v2 else "memory.max_usage_in_bytes"))
        except OSError:
            return None

    def oom_kills(self):
        text = self.read("memory.events" if self.v2 else "memory.oom_control")
        return next((int(l.split()[1]) for l in text.splitlines() if l.startswith("oom_kill ")), 0)

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


# ---- agents that read everything and never answer ----

def stalled_agent(deaf=False):
    """An agent that accepts and never answers; it reads and discards what it gets, or with
    `deaf` reads nothing, so the proxy's send queue for it fills."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)

    def drain(c):
        c.settimeout(0.2)
        while deaf and not STOP.is_set():
            time.sleep(0.2)
        while not STOP.is_set():
            try:
                if not c.recv(1 << 20):
                    return
            except socket.timeout:
                continue
            except OSError:
                return

    def accept():
        while not STOP.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            threading.Thread(target=drain, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv.getsockname()[1]


# ---- the three kinds of clients ----

PER_CHILD = 15000  # idle connections per child process: under a 20,000 descriptor limit


def open_idle(port, n, first):
    """n idle connections from 127.0.<first>.1, .2, ... (5,000 each)."""
    held = []
    for i in range(n):
        s = socket.socket()
        try:
            s.bind((f"127.0.{first}.{1 + i // 5000}", 0))
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            held.append(s)
        except OSError:
            s.close()
    return held


def idle_child(port, n, first):
    """A child process: opens n idle connections, says how many, holds them until stdin ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held = open_idle(port, n, first)
    print(len(held), flush=True)
    sys.stdin.read()


def hold_idle(port, n):
    """n idle connections from child processes (a process holds at most PER_CHILD); returns the
    children and how many connected."""
    children, connected = [], 0
    for k in range(0, n, PER_CHILD):
        children.append(subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--idle-child", str(port),
             str(min(PER_CHILD, n - k)), str(1 + k // PER_CHILD)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for c in children:
        connected += int(c.stdout.readline() or 0)
    return children, connected


def hold_partial(port, counts):
    """Sends most of a frame, holds it until the proxy resets the connection, again."""
    frame = pre_request(1, body=b"p" * FRAME_BODY)
    part = frame[: len(frame) - 1000]
    while not STOP.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(part)
                counts["partial_sent"] += 1
                s.settimeout(0.5)
                while not STOP.is_set():
                    try:
                        if not s.recv(4096):
                            break
                    except socket.timeout:
                        continue
        except OSError as e:
            counts["partial_reset"] += 1
            counts.setdefault("partial_error_" + type(e).__name__, 0)
            counts["partial_error_" + type(e).__name__] += 1
            time.sleep(0.05)


def keep_in_flight(port, counts, n):
    """Sends whole large PreRequests, one at a time, each as soon as the last was answered."""
    frame = pre_request(n, body=b"f" * FRAME_BODY)
    while not STOP.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                while not STOP.is_set():
                    s.sendall(frame)
                    counts["big_sent"] += 1
                    s.settimeout(10)
                    if not s.recv(1 << 16):
                        break
                    time.sleep(0.05)
        except OSError as e:
            counts["big_reset"] += 1
            counts.setdefault("big_error_" + type(e).__name__, 0)
            counts["big_error_" + type(e).__name__] += 1
            time.sleep(0.05)


def wait_accepted(admin, n, limit=180):
    """Waits until the proxy took all n connections out of its backlog (accepted, or reset at
    its limit), at most `limit` seconds: the senders must not queue behind them. Returns how
    many it took."""
    deadline, taken = time.time() + limit, 0
    while time.time() < deadline:
        m = metrics(admin)
        taken = m.get("sigsci_proxy_connections_accepted_total", 0) + \
            m.get("sigsci_proxy_connections_rejected_total", 0)
        if taken >= n:
            break
        time.sleep(0.5)
    return int(taken)


def metrics(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError:
        return {}
    keep = ("sigsci_proxy_connections_open", "sigsci_proxy_uninspected_total",
            "sigsci_proxy_connections_accepted_total", "sigsci_proxy_connections_rejected_total",
            "sigsci_proxy_rpcs_in_flight", "sigsci_proxy_connections_closed_total")
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l.startswith(keep)}


def status_kib(pid, field):
    try:
        for l in open(f"/proc/{pid}/status"):
            if l.startswith(field + ":"):
                return int(l.split()[1])
    except OSError:
        return None


def main():
    if sys.argv[1:2] == ["--idle-child"]:
        return idle_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", required=True)
    ap.add_argument("--limit", default="256M")
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--connections", type=int, default=20000)
    ap.add_argument("--partial-senders", type=int, default=24)
    ap.add_argument("--big-senders", type=int, default=40)
    ap.add_argument("--deaf-agents", type=int, default=0)
    ap.add_argument("--proxy-arg", action="append", default=[])
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("memory-limit: terminated"))
    limit = parse_size(a.limit)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    agents = [stalled_agent(deaf=i < a.deaf_agents) for i in range(3)]
    rpc, admin = free_port(), free_port()
    cg = Cgroup(limit)
    procs = cg.procs()

    def enter_cgroup():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    args = [a.proxy, "--listen", f"127.0.0.1:{rpc}", "--admin", f"127.0.0.1:{admin}",
            "--agents", ",".join(f"127.0.0.1:{p}" for p in agents), *a.proxy_arg]
    log = open(f"/tmp/memory-limit-proxy.{os.getpid()}.log", "w")
    proxy = subprocess.Popen(args, stdout=log, stderr=log, preexec_fn=enter_cgroup)
    counts = {"partial_sent": 0, "partial_reset": 0, "big_sent": 0, "big_reset": 0}
    samples, held = [], []
    alive, hwm, idle, t_idle, mid, final, accepted = False, None, 0, 0.0, None, {}, 0
    after_idle = None
    try:
        wait_http(admin)
        t0 = time.time()
        held, idle = hold_idle(rpc, a.connections)
        accepted = wait_accepted(admin, idle)
        t_idle = time.time() - t0
        after_idle = {"cgroup_mib": round(cg.usage() / 2**20, 1),
                      "cgroup_peak_mib": round((cg.peak() or 0) / 2**20, 1),
                      "proxy_rss_mib": round((status_kib(proxy.pid, "VmRSS") or 0) / 1024, 1),
                      "connections_open": metrics(admin).get("sigsci_proxy_connections_open")}
        workers = [threading.Thread(target=hold_partial, args=(rpc, counts), daemon=True)
                   for _ in range(a.partial_senders)]
        workers += [threading.Thread(target=keep_in_flight, args=(rpc, counts, 100 + i), daemon=True)
                    for i in range(a.big_senders)]
        for w in workers:
            w.start()
        end = time.time() + a.duration
        mid = None
        while time.time() < end and proxy.poll() is None:
            samples.append((cg.usage(), status_kib(proxy.pid, "VmRSS")))
            if mid is None and time.time() > end - a.duration / 2:
                mid = metrics(admin)
            time.sleep(0.1)
        final = metrics(admin)
        alive = proxy.poll() is None
        hwm = status_kib(proxy.pid, "VmHWM")
    finally:
        STOP.set()
        proxy.kill()
        proxy.wait()
        for c in held:
            c.stdin.close()
            c.wait()
        peak, ooms = cg.peak(), cg.oom_kills()
        cg.remove()
    usage = [u for u, _ in samples]
    result = {
        "limit_mib": limit / 2**20,
        "proxy_args": a.proxy_arg,
        "deaf_agents": a.deaf_agents,
        "fd_limit": hard,
        "alive_at_end": alive,
        "exit_code": None if alive else proxy.returncode,
        "oom_kills": ooms,
        "cgroup_peak_mib": round((peak or max(usage, default=0)) / 2**20, 1),
        "cgroup_max_sampled_mib": round(max(usage, default=0) / 2**20, 1),
        "proxy_peak_rss_mib": round(hwm / 1024, 1) if hwm else None,
        "proxy_max_sampled_rss_mib": round(max((r or 0 for _, r in samples), default=0) / 1024, 1),
        "idle_connected": idle,
        "idle_taken_by_proxy": accepted,
        "idle_open_seconds": round(t_idle, 1),
        "after_idle": after_idle,
        "clients": counts,
        "metrics_mid": mid,
        "metrics_end": final,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
