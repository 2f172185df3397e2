#!/usr/bin/env python3
"""Fault containment, measured on the release build over loopback: what one hostile client or
agent costs the good traffic beside it.

Each case starts simulated agents (`loadtest agent`) and the real `sigsci-proxy` as processes,
does one hostile thing beside good module-like traffic (`loadtest drive`), and prints what a
module would notice: calls failed open, resets vs clean closes, the proxy's RSS, the agent's
verdict. The error-answering and stalling agents are load scenarios
(`loadtest local --scenario loadtest/scenarios/{error,stall}-agent.toml`).

Usage: scripts/measure/faults.py [CASE ...]   (cases: limit flood partial raw restart invalid;
default all). Needs `cargo build --release --bins` first. Standard library only.
"""

import json
import os
import re
import resource
import socket
import struct
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
PROCS = []


# ---- MessagePack, the little of it the modules use ----

def pack(v):
    if v is None:
        return b"\xc0"
    if isinstance(v, bool):
        return b"\xc3" if v else b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        return b"\xcf" + struct.pack(">Q", v)
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):  # as a msgpack str: modules send raw bytes as strings
        n = len(v)
        if n < 32:
            return bytes([0xA0 | n]) + v
        if n < 256:
            return b"\xd9" + bytes([n]) + v
        if n < 65536:
            return b"\xda" + struct.pack(">H", n) + v
        return b"\xdb" + struct.pack(">I", n) + v
    if isinstance(v, (list, tuple)):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(v)


def unpack(b, i=0):
    """Returns (value, next index)."""
    t = b[i]
    if t < 0x80:
        return t, i + 1
    if t >= 0xE0:
        return t - 256, i + 1
    if 0x80 <= t <= 0x8F or t in (0xDE, 0xDF):
        n, i = (t & 0x0F, i + 1) if t <= 0x8F else (
            (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3) if t == 0xDE else (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5))
        d = {}
        for _ in range(n):
            k, i = unpack(b, i)
            d[k], i = unpack(b, i)
        return d, i
    if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
        n, i = (t & 0x0F, i + 1) if t <= 0x9F else (
            (struct.unpack(">H", b[i + 1:i + 3])[0], i + 3) if t == 0xDC else (struct.unpack(">I", b[i + 1:i + 5])[0], i + 5))
        out = []
        for _ in range(n):
            x, i = unpack(b, i)
            out.append(x)
        return out, i
    if 0xA0 <= t <= 0xBF or t in (0xD9, 0xDA, 0xDB):
        if t <= 0xBF:
            n, i = t & 0x1F, i + 1
        else:
            w = {0xD9: 1, 0xDA: 2, 0xDB: 4}[t]
            n, i = int.from_bytes(b[i + 1:i + 1 + w], "big"), i + 1 + w
        return b[i:i + n].decode("utf-8", "replace"), i + n
    if t == 0xC0:
        return None, i + 1
    if t in (0xC2, 0xC3):
        return t == 0xC3, i + 1
    widths = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
    if t in widths:
        w = widths[t]
        return int.from_bytes(b[i + 1:i + 1 + w], "big", signed=t >= 0xD0), i + 1 + w
    raise ValueError(f"type byte {t:#x}")


def pre_request(msgid, uri=b"/", body=b"", method="GET"):
    params = {"Method": method, "URI": uri, "RemoteAddr": "192.0.2.1", "Scheme": "http",
              "Protocol": "HTTP/1.1", "HeadersIn": [["Host", "example.com"]], "PostBody": body}
    return pack([0, msgid, "RPC.PreRequest", [params]])


def call(addr, frame, timeout=2.0):
    """One call on a fresh connection, as modules make them. Returns the decoded answer."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(frame)
        buf = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed before an answer")
            buf += chunk
            try:
                return unpack(buf)[0]
            except (IndexError, struct.error):
                continue


# ---- processes ----

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path="/healthz", limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"port {port}{path} not ready")


def http_get(port, path, timeout=2.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def start(args, pre=None):
    cmd = args if pre is None else ["bash", "-c", pre + ' && exec "$@"', "-"] + args
    # FAULTS_PROXY_LOG=FILE keeps the proxy's log.
    log = os.environ.get("FAULTS_PROXY_LOG")
    err = open(log, "a") if log and "sigsci-proxy" in args[0] else subprocess.DEVNULL
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    PROCS.append(p)
    return p


def agent(extra=()):
    rpc, admin = free_port(), free_port()
    p = start([f"{BIN}/loadtest", "agent", "--listen", f"127.0.0.1:{rpc}", "--admin",
               f"127.0.0.1:{admin}", *extra])
    wait_http(admin)
    return {"rpc": rpc, "admin": admin, "proc": p}


def proxy(agents, extra=(), pre=None):
    rpc, admin = free_port(), free_port()
    p = start([f"{BIN}/sigsci-proxy", "--listen", f"127.0.0.1:{rpc}", "--admin", f"127.0.0.1:{admin}",
               "--agents", ",".join(f"127.0.0.1:{a['rpc']}" for a in agents), *extra], pre)
    wait_http(admin, "/readyz")
    return {"rpc": rpc, "admin": admin, "proc": p}


def stats(a):
    return json.loads(http_get(a["admin"], "/stats")[1])


def metric(px, name):
    text = http_get(px["admin"], "/metrics")[1]
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def uninspected(px, reason):
    return metric(px, 'sigsci_proxy_uninspected_total{reason="%s"}' % reason)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def drive(px, rate, duration):
    """`loadtest drive` against the proxy; returns (transactions, failed calls) from its JSON."""
    out = f"/tmp/faults-drive-{os.getpid()}.json"
    subprocess.run([f"{BIN}/loadtest", "drive", "--target", f"127.0.0.1:{px['rpc']}", "--rate", str(rate),
                    "--duration", duration, "--attack-fraction", "0.2", "--json", out],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        report = json.load(f)
    os.unlink(out)
    return report


def drive_summary(report):
    t = report.get("tally") or report
    calls = sum(m.get("count", 0) for m in report.get("methods", {}).values()) if "methods" in report else None
    return json.dumps({k: t[k] for k in ("transactions", "failed_open", "errors") if k in t}) if isinstance(t, dict) else str(calls)


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    PROCS.clear()


# ---- cases ----

def case_limit():
    """At the connection limit with no connection idle: answer or reset within 5 ms, no FIN."""
    a = agent()
    px = proxy([a], ["--max-connections", "4"])
    held = []
    for i in range(4):  # four connections, none idle: each is sending a frame (half of it so far)
        s = socket.create_connection(("127.0.0.1", px["rpc"]))
        frame = pre_request(i)
        s.sendall(frame[: len(frame) // 2])
        held.append(s)
    time.sleep(0.2)
    resets = fins = answers = 0
    worst = 0.0
    for i in range(40):
        t0 = time.perf_counter()
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", px["rpc"]), timeout=1)
            s.sendall(pre_request(100 + i))
            data = s.recv(4096)
            if data:
                answers += 1
            else:
                fins += 1
        except ConnectionResetError:
            resets += 1
        except socket.timeout:
            pass
        worst = max(worst, time.perf_counter() - t0)
        if s is not None:
            s.close()
    for s in held:
        s.close()
    print(f"limit: 40 calls at --max-connections 4, 4 connections mid-frame: {resets} resets, {fins} clean closes, "
          f"{answers} answers; slowest end {worst * 1e3:.1f} ms; "
          f"uninspected_total{{connection_limit}} {uninspected(px, 'connection_limit'):.0f}")


def case_flood():
    """ulimit -n 1024, 1,500 idle connections held: good calls and /healthz still answered."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    a = agent()
    px = proxy([a], pre="ulimit -n 1024")
    idle = []
    refused = 0
    for _ in range(1500):
        try:
            idle.append(socket.create_connection(("127.0.0.1", px["rpc"]), timeout=1))
        except OSError:
            refused += 1
    time.sleep(0.5)
    report = drive(px, 100, "3s")
    status = http_get(px["admin"], "/healthz", timeout=1)[0]
    evicted = metric(px, 'sigsci_proxy_connections_closed_total{reason="evicted_idle"}')
    print(f"flood: proxy under ulimit -n 1024, 1,500 idle connections opened ({refused} refused): good "
          f"traffic {drive_summary(report)}; /healthz {status}; idle connections evicted {evicted:.0f}")
    for s in idle:
        s.close()


def case_partial():
    """400 connections each holding 0.9 MB of a 1 MB frame: RSS bounded, good traffic served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    a = agent()
    px = proxy([a])
    base = rss_kib(px["proc"].pid)
    frame = pre_request(1, body=b"a" * 1_000_000)
    part = frame[: len(frame) * 9 // 10]
    holders = []
    for _ in range(400):
        s = socket.create_connection(("127.0.0.1", px["rpc"]))
        s.setblocking(False)
        try:
            s.sendall(part)
        except (BlockingIOError, OSError):
            pass
        holders.append(s)
    time.sleep(1.0)
    peak = rss_kib(px["proc"].pid)
    report = drive(px, 300, "3s")
    peak = max(peak, rss_kib(px["proc"].pid))
    shed = metric(px, 'sigsci_proxy_uninspected_total{reason="frame_budget"}')
    print(f"partial: 400 x 0.9 MB partial frames: proxy RSS {base / 1024:.0f} MiB before, peak "
          f"{peak / 1024:.0f} MiB; connections shed {shed:.0f}; good traffic {drive_summary(report)}")
    for s in holders:
        s.close()


def case_raw():
    """An attack next to invalid UTF-8, and a 1.5 MB request with an attack in its body: 406."""
    a = agent()
    px = proxy([a])
    for name, frame in [
        ("URI /?q=<script>\\xff\\xfe", pre_request(1, uri=b"/?q=<script>\xff\xfe")),
        ("1.5 MB body with <script>", pre_request(2, uri=b"/upload", method="POST",
                                                  body=b"a" * 1_500_000 + b"<script>alert(1)</script>")),
    ]:
        answer = call(("127.0.0.1", px["rpc"]), frame)
        err, result = answer[2], answer[3]
        waf = result.get("WAFResponse") if isinstance(result, dict) else None
        print(f"raw: {name}: agent answered WAFResponse {waf} (error {err!r})")


def case_restart():
    """An agent killed and restarted on its address, under load: time to its first PreRequest."""
    a, b = agent(), agent()
    px = proxy([a, b])
    drive_proc = subprocess.Popen([f"{BIN}/loadtest", "drive", "--target", f"127.0.0.1:{px['rpc']}",
                                   "--rate", "1000", "--duration", "8s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(drive_proc)
    time.sleep(1.5)
    b["proc"].kill()
    b["proc"].wait()
    time.sleep(2.0)
    rpc, admin = b["rpc"], free_port()
    p = start([f"{BIN}/loadtest", "agent", "--listen", f"127.0.0.1:{rpc}", "--admin", f"127.0.0.1:{admin}"])
    # Listening: the RPC port accepts.
    while True:
        try:
            socket.create_connection(("127.0.0.1", rpc), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.005)
    listening = time.perf_counter()
    wait_http(admin)
    back = {"admin": admin}
    while stats(back)["prerequests"] == 0:
        if time.perf_counter() - listening > 10:
            break
        time.sleep(0.01)
    took = time.perf_counter() - listening
    drive_proc.wait()
    print(f"restart: agent back on its address under 1,000 tx/s: first PreRequest {took * 1e3:.0f} ms "
          f"after it listened")


def case_invalid():
    """400 structurally invalid frames beside good traffic: none reaches an agent."""
    a = agent()
    px = proxy([a])
    m = {"URI": "/"}
    frames = [pack([0, 1, "RPC.PreRequest", []]), pack([0, 2, "RPC.PreRequest", [1]]),
              pack([0, 3, "RPC.PreRequest", [m, m]]), pack([2, "RPC.PreRequest", [m]])]
    before = stats(a)
    for i in range(400):
        try:
            call(("127.0.0.1", px["rpc"]), frames[i % 4], timeout=1)
        except (ConnectionError, OSError, socket.timeout):
            pass
    report = drive(px, 300, "2s")
    after = stats(a)
    reached = sum(after[k] - before[k] for k in ("unknown_methods", "notifications", "bad_params", "malformed"))
    print(f"invalid: 400 invalid frames: {reached} reached the agent; good traffic {drive_summary(report)}; "
          f"uninspected_total{{invalid_frame}} {uninspected(px, 'invalid_frame'):.0f}")


CASES = {"limit": case_limit, "flood": case_flood, "partial": case_partial, "raw": case_raw,
         "restart": case_restart, "invalid": case_invalid}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(CASES):
        try:
            CASES[name]()
        finally:
            stop_all()
