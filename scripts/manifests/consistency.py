#!/usr/bin/env python3
"""Consistency of the rendered manifests with each other and with the code they deploy.

Usage: consistency.py REPO_ROOT RENDERED_DIR

The proxy's configuration is stated once, in the env of Deployment sigsci-proxy
(manifests/base/proxy.yaml). Every port, name and label elsewhere — Services, probes,
NetworkPolicies, the PodMonitor, the HPA/KEDA metric, the example app, the loadtest Job, the
Dockerfiles — is checked against it, and it is checked against the Rust sources where they
state the same fact (env names, RBAC verbs, metric name, binary names). A test names the fact
it checks; a failure prints what differs.
"""

import glob
import os
import re
import sys

import yaml

# Agreed defaults (docs/architecture.md, docs/protocol.md, docs/drain.md), used where the sources do not state them yet.
RPC_PORT = 9999
ADMIN_PORT = 9090
AGENT_CONTEXT_SECONDS = 10  # the agent's context-expiration default
ENDPOINT_PROPAGATION_SECONDS = 5
METRIC = "sigsci_proxy_agent_demand"
CLIENT_LABEL = ("sigsci-proxy/client", "true")
MONITORING_NAMESPACE = "monitoring"
# What the proxy's Kubernetes source uses, when agent-pool/src/source/kubernetes.rs does not
# export REQUIRED_VERBS / RBAC_API_GROUP / RBAC_RESOURCE (when it does, those win): a watcher
# lists then watches with a label selector.
FALLBACK_VERBS = ["list", "watch"]
FALLBACK_API_GROUP = "discovery.k8s.io"
FALLBACK_RESOURCE = "endpointslices"
EXPECTED_PROXY_ENV = [
    "SIGSCI_PROXY_LISTEN",
    "SIGSCI_PROXY_ADMIN",
    "SIGSCI_PROXY_AGENTS_K8S",
    "SIGSCI_PROXY_DRAIN_DELAY",
    "SIGSCI_PROXY_DRAIN_TIMEOUT",
    "SIGSCI_PROXY_LOG_FORMAT",
]
PROXY_TARGETS = ["base", "production", "simulated", "autoscaling", "autoscaling-keda", "monitoring",
                 "autoscaling-monitoring", "autoscaling-keda-monitoring", "node-local"]
# Rendered with components/ipv4-only: listeners on 0.0.0.0 (kernels without IPv6); everywhere
# else [::], one dual-stack socket.
IPV4_ONLY_TARGETS = {"ipv4-only", "ipv4-only-node-local"}
# Rendered with components/busy-poll: that variable too, and a CPU of its own for the spinner.
BUSY_POLL_TARGET, BUSY_POLL_ENV = "busy-poll", "SIGSCI_PROXY_BUSY_POLL"
# The proxy's egress ports: agents, DNS, the API server; the NetworkPolicy components change
# the API server's (components/netpol-cilium moves it to a CiliumNetworkPolicy,
# components/apiserver-port adds MicroK8s' 16443). operations.py checks those rules' details.
PROXY_EGRESS_PORTS = [53, 443, 6443, RPC_PORT]
PROXY_EGRESS_PORTS_BY_TARGET = {
    "netpol-cilium": [53, RPC_PORT],
    "netpol-apiserver-port": [53, 443, 6443, RPC_PORT, 16443],
    "netpol-microk8s": [53, 443, 6443, RPC_PORT, 16443],
}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok


R = Results()


# ---------------------------------------------------------------------------- helpers
def load(rendered, target):
    path = os.path.join(rendered, target + ".yaml")
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def find(docs, kind, name=None):
    out = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    return out


def one(docs, kind, name):
    found = find(docs, kind, name)
    return found[0] if len(found) == 1 else None


def pod_spec(obj):
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container, name):
    e = env_of(container).get(name)
    return None if e is None else e.get("value")


def port_of(addr):
    m = re.fullmatch(r".*:(\d+)", addr or "")
    return int(m.group(1)) if m else None


def container_port(container, name_or_number):
    if isinstance(name_or_number, int):
        return name_or_number
    for p in container.get("ports", []):
        if p.get("name") == name_or_number:
            return p["containerPort"]
    return None


def seconds(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text or "")
    if not m:
        return None
    value = float(m.group(1))
    return {"ms": value / 1000, "s": value, "m": value * 60}[m.group(2)]


def cpu(quantity):
    """A CPU quantity ("2", "1.5", "250m") in cores; 0 when absent or unreadable."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", str(quantity or ""))
    if not m:
        return 0
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def read(root, rel):
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


def rust_sources(root, *dirs):
    text = ""
    for d in dirs:
        for path in glob.glob(os.path.join(root, d, "**", "*.rs"), recursive=True):
            with open(path) as f:
                text += f.read()
    return text


# ---------------------------------------------------------------------------- checks
def check_rbac(t, docs, verbs, group, resource):
    role = one(docs, "Role", "sigsci-proxy-endpointslices")
    if not R.check(f"{t}: Role sigsci-proxy-endpointslices exists", role is not None):
        return
    rules = role.get("rules", [])
    want = [{"apiGroups": [group], "resources": [resource], "verbs": verbs}]
    got = [{k: sorted(r.get(k, [])) for k in ("apiGroups", "resources", "verbs")} for r in rules]
    want = [{k: sorted(v) for k, v in r.items()} for r in want]
    R.check(f"{t}: Role grants exactly {'/'.join(verbs)} on {group} {resource}, nothing else", got == want and all(not r.get("resourceNames") for r in rules),
            f"rules are {rules}")
    R.check(f"{t}: no ClusterRole or ClusterRoleBinding",
            not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding"))
    others = [r["metadata"]["name"] for r in find(docs, "Role") if r is not role]
    R.check(f"{t}: the proxy's Role is the only Role", not others, f"also {others}")
    binding = one(docs, "RoleBinding", "sigsci-proxy-endpointslices")
    proxy = proxy_workload(docs)
    sa = pod_spec(proxy).get("serviceAccountName")
    ns = proxy["metadata"]["namespace"]
    ok = (binding is not None and binding["roleRef"]["name"] == role["metadata"]["name"]
          and binding["roleRef"]["kind"] == "Role"
          and binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
    R.check(f"{t}: RoleBinding binds the Role to the proxy's ServiceAccount {sa} in {ns}", ok,
            f"binding is {binding and binding.get('subjects')}")
    R.check(f"{t}: ServiceAccount {sa} exists", one(docs, "ServiceAccount", sa) is not None)


def proxy_workload(docs):
    """The proxy's Deployment, or its DaemonSet (overlays/node-local)."""
    return one(docs, "Deployment", "sigsci-proxy") or one(docs, "DaemonSet", "sigsci-proxy")


def tcp_listen(value):
    """The TCP entry of a SIGSCI_PROXY_LISTEN list ("[::]:9999,unix:/path" -> "[::]:9999")."""
    tcp = [a for a in (value or "").split(",") if a and not a.startswith("unix:")]
    return tcp[0] if len(tcp) == 1 else None


def all_addresses(addr, port, t):
    """[::]:port (one dual-stack socket, so IPv6-only clusters work too); 0.0.0.0:port only with components/ipv4-only."""
    return addr == (f"0.0.0.0:{port}" if t in IPV4_ONLY_TARGETS else f"[::]:{port}")


def check_proxy(t, docs, source):
    proxy = proxy_workload(docs)
    if not R.check(f"{t}: Deployment (or node-local DaemonSet) sigsci-proxy exists", proxy is not None):
        return None
    ns = proxy["metadata"]["namespace"]
    spec = pod_spec(proxy)
    c = spec["containers"][0]
    env = env_of(c)
    names = [n for n in env if n.startswith("SIGSCI_PROXY_")]
    expected = EXPECTED_PROXY_ENV + ([BUSY_POLL_ENV] if t == BUSY_POLL_TARGET else [])
    R.check(f"{t}: proxy env sets every agreed SIGSCI_PROXY_* variable",
            sorted(names) == sorted(expected), f"has {sorted(names)}")
    if t == BUSY_POLL_TARGET:
        res = c.get("resources", {})
        R.check(f"{t}: busy polling is on ({BUSY_POLL_ENV} > 0)",
                (seconds(env_value(c, BUSY_POLL_ENV)) or 0) > 0, env_value(c, BUSY_POLL_ENV))
        R.check(f"{t}: the busy-polling proxy requests one CPU and may use two",
                cpu(res.get("requests", {}).get("cpu")) >= 1 and cpu(res.get("limits", {}).get("cpu")) >= 2,
                f"resources {res}")
    if source["proxy_env"]:
        unknown = [n for n in names if n not in source["proxy_env"]]
        R.check(f"{t}: every SIGSCI_PROXY_* variable in the manifest is read by proxy/src",
                not unknown, f"not in the proxy's sources: {unknown}")
    listen, admin = tcp_listen(env_value(c, "SIGSCI_PROXY_LISTEN")), env_value(c, "SIGSCI_PROXY_ADMIN")
    rpc_port, admin_port = port_of(listen), port_of(admin)
    R.check(f"{t}: proxy listens on {RPC_PORT} and serves admin on {ADMIN_PORT} on all addresses "
            "(IPv4 and IPv6)",
            all_addresses(listen, RPC_PORT, t) and all_addresses(admin, ADMIN_PORT, t),
            f"LISTEN={listen} ADMIN={admin}")
    R.check(f"{t}: proxy container ports rpc/admin match LISTEN/ADMIN",
            container_port(c, "rpc") == rpc_port and container_port(c, "admin") == admin_port)
    svc = one(docs, "Service", "sigsci-proxy")
    ports = svc["spec"]["ports"] if svc else []
    R.check(f"{t}: Service sigsci-proxy exposes only the RPC port {rpc_port}",
            len(ports) == 1 and ports[0]["port"] == rpc_port
            and container_port(c, ports[0].get("targetPort", ports[0]["port"])) == rpc_port
            and svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"ports {ports}")
    R.check(f"{t}: Service sigsci-proxy selects the proxy pods",
            svc is not None and labels_match(svc["spec"]["selector"], proxy["spec"]["template"]["metadata"]["labels"]))
    ready, live = c.get("readinessProbe", {}).get("httpGet", {}), c.get("livenessProbe", {}).get("httpGet", {})
    R.check(f"{t}: proxy readiness /readyz and liveness /healthz on the admin port",
            ready.get("path") == "/readyz" and live.get("path") == "/healthz"
            and container_port(c, ready.get("port")) == admin_port
            and container_port(c, live.get("port")) == admin_port, f"{ready} {live}")
    ann = proxy["spec"]["template"]["metadata"].get("annotations", {})
    R.check(f"{t}: prometheus.io annotations point at the admin port's /metrics",
            ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == str(admin_port)
            and ann.get("prometheus.io/path") == "/metrics", f"{ann}")
    delay = seconds(env_value(c, "SIGSCI_PROXY_DRAIN_DELAY"))
    timeout = seconds(env_value(c, "SIGSCI_PROXY_DRAIN_TIMEOUT"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    R.check(f"{t}: proxy grace period ({grace}s) is above drain delay + drain timeout",
            delay is not None and timeout is not None and grace > delay + timeout,
            f"delay={delay} timeout={timeout}")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    R.check(f"{t}: proxy preStop runs `{source['proxy_entrypoint']} drain` (no shell)",
            pre == [source["proxy_entrypoint"], "drain"], f"preStop is {pre}")
    if proxy["kind"] == "Deployment":
        R.check(f"{t}: proxy has 2 replicas", proxy["spec"].get("replicas") == 2)
    R.check(f"{t}: proxy log format is json", env_value(c, "SIGSCI_PROXY_LOG_FORMAT") == "json")
    return {"ns": ns, "rpc_port": rpc_port, "admin_port": admin_port, "service": svc["metadata"]["name"],
            "labels": proxy["spec"]["template"]["metadata"]["labels"], "container": c}


def check_agents(t, docs, proxy):
    c = proxy["container"]
    value = env_value(c, "SIGSCI_PROXY_AGENTS_K8S") or ""
    env = env_of(c)
    # Resolve $(POD_NAMESPACE) the way the kubelet does, if it is the pod's own namespace.
    for var, e in env.items():
        ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if ref == "metadata.namespace" and list(env).index(var) < list(env).index("SIGSCI_PROXY_AGENTS_K8S"):
            value = value.replace(f"$({var})", proxy["ns"])
    m = re.fullmatch(r"([a-z0-9-]+)/([a-z0-9-]+):([a-z0-9-]+)", value)
    if not R.check(f"{t}: SIGSCI_PROXY_AGENTS_K8S is NAMESPACE/SERVICE:PORTNAME", m is not None, value):
        return
    ns, name, port_name = m.groups()
    svc = one(docs, "Service", name)
    R.check(f"{t}: agents' Service {ns}/{name} exists in the proxy's namespace",
            svc is not None and svc["metadata"]["namespace"] == ns == proxy["ns"])
    if svc is None:
        return
    R.check(f"{t}: agents' Service is headless", svc["spec"].get("clusterIP") == "None")
    sports = {p.get("name"): p for p in svc["spec"]["ports"]}
    agent = one(docs, "Deployment", "sigsci-agent")
    ac = pod_spec(agent)["containers"][0]
    R.check(f"{t}: agents' Service selects the agent pods",
            labels_match(svc["spec"]["selector"], agent["spec"]["template"]["metadata"]["labels"]))
    sp = sports.get(port_name)
    if not R.check(f"{t}: agents' Service has a port named {port_name}", sp is not None, f"{list(sports)}"):
        return
    agent_port = container_port(ac, sp.get("targetPort", sp["port"]))
    rpc_addr = env_value(ac, "SIGSCI_RPC_ADDRESS")
    is_sim = (ac.get("args") or [None])[0] == "agent"
    if is_sim:
        args = ac["args"]
        listen = args[args.index("--listen") + 1] if "--listen" in args else None
        admin = args[args.index("--admin") + 1] if "--admin" in args else None
        R.check(f"{t}: simulated agent listens where the Service points ({sp['port']})",
                port_of(listen) == agent_port == sp["port"] == RPC_PORT, f"--listen {listen}")
        R.check(f"{t}: simulated agent admin port matches its container port",
                port_of(admin) == container_port(ac, "admin"))
        R.check(f"{t}: simulated agent listens on all addresses (IPv4 and IPv6)",
                listen == f"[::]:{RPC_PORT}" and admin == f"[::]:{ADMIN_PORT}", f"--listen {listen} --admin {admin}")
    R.check(f"{t}: SIGSCI_RPC_ADDRESS is TCP [::]:{sp['port']} (0.0.0.0 with ipv4-only) = container port rpc",
            all_addresses(rpc_addr, sp["port"], t) and agent_port == sp["port"] == RPC_PORT, f"{rpc_addr}")
    probe = ac.get("readinessProbe", {}).get("tcpSocket", {})
    R.check(f"{t}: agent readiness is a tcpSocket probe on the RPC port",
            container_port(ac, probe.get("port")) == agent_port)
    spec = pod_spec(agent)
    sleep = ac.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    R.check(f"{t}: agent preStop sleep ({sleep}s) covers the 10 s request context + endpoint propagation",
            sleep is not None and sleep >= AGENT_CONTEXT_SECONDS + ENDPOINT_PROPAGATION_SECONDS)
    R.check(f"{t}: agent grace period ({grace}s) is above its preStop sleep", sleep is not None and grace > sleep)
    mounts = {m["mountPath"]: m["name"] for m in ac.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    R.check(f"{t}: agent has an emptyDir at /sigsci/tmp under a read-only root",
            "emptyDir" in vols.get(mounts.get("/sigsci/tmp"), {})
            and ac["securityContext"].get("readOnlyRootFilesystem") is True)
    R.check(f"{t}: agent pods do not mount a service account token",
            spec.get("automountServiceAccountToken") is False)
    spread = spec.get("topologySpreadConstraints", [])
    R.check(f"{t}: agent and proxy pods spread over nodes",
            any(s["topologyKey"] == "kubernetes.io/hostname" for s in spread)
            and (one(docs, "Deployment", "sigsci-proxy") is None  # a DaemonSet: one per node
                 or any(s["topologyKey"] == "kubernetes.io/hostname"
                        for s in pod_spec(one(docs, "Deployment", "sigsci-proxy")).get("topologySpreadConstraints", []))))
    secret_refs = [e["name"] for e in ac.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    R.check(f"{t}: no Secret object is rendered (credentials stay out of the repository)", not find(docs, "Secret"))
    if is_sim:
        R.check(f"{t}: simulated agents need no Secret", not secret_refs, f"{secret_refs}")
        R.check(f"{t}: simulated agent image is the loadtest image",
                ac["image"].split(":")[0].endswith("sigsci-loadtest"), ac["image"])
    elif t != "base":
        R.check(f"{t}: agent credentials come from a Secret",
                sorted(secret_refs) == ["SIGSCI_ACCESSKEYID", "SIGSCI_SECRETACCESSKEY"], f"{secret_refs}")
        R.check(f"{t}: real agent image signalsciences/sigsci-agent pinned by tag (and digest), IfNotPresent",
                re.fullmatch(r"signalsciences/sigsci-agent:\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?", ac["image"]) is not None
                and ac.get("imagePullPolicy") == "IfNotPresent", ac["image"])
    # PDBs select what they protect.
    for dep in ("sigsci-agent", "sigsci-proxy"):
        pdb, d = one(docs, "PodDisruptionBudget", dep), one(docs, "Deployment", dep)
        if d is None:  # the node-local DaemonSet: kubectl drain does not evict it
            continue
        R.check(f"{t}: PodDisruptionBudget {dep} selects the {dep} pods",
                pdb is not None and labels_match(pdb["spec"]["selector"]["matchLabels"],
                                                 d["spec"]["template"]["metadata"]["labels"]))


def check_netpol(t, docs, proxy):
    agent = one(docs, "Deployment", "sigsci-agent")
    agent_labels = agent["spec"]["template"]["metadata"]["labels"]
    pols = {p["metadata"]["name"]: p for p in find(docs, "NetworkPolicy")}
    deny = pols.get("default-deny", {}).get("spec", {})
    R.check(f"{t}: default-deny NetworkPolicy covers every pod, both directions",
            deny.get("podSelector") == {} and sorted(deny.get("policyTypes", [])) == ["Egress", "Ingress"]
            and not deny.get("ingress") and not deny.get("egress"))
    pp = pols.get("sigsci-proxy", {}).get("spec", {})
    R.check(f"{t}: proxy NetworkPolicy selects the proxy pods",
            labels_match(pp.get("podSelector", {}).get("matchLabels"), proxy["labels"]))
    ingress = {tuple(sorted(p["port"] for p in rule.get("ports", []))): rule for rule in pp.get("ingress", [])}
    rpc_rule, admin_rule = ingress.get((proxy["rpc_port"],)), ingress.get((proxy["admin_port"],))
    R.check(f"{t}: proxy ingress: {proxy['rpc_port']} only from namespaces labelled {CLIENT_LABEL[0]}={CLIENT_LABEL[1]}",
            rpc_rule is not None and rpc_rule["from"] == [{"namespaceSelector": {"matchLabels": {CLIENT_LABEL[0]: CLIENT_LABEL[1]}}}],
            f"{rpc_rule}")
    R.check(f"{t}: proxy ingress: {proxy['admin_port']} only from the {MONITORING_NAMESPACE} namespace",
            admin_rule is not None and admin_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}],
            f"{admin_rule}")
    R.check(f"{t}: proxy ingress has no other rule", len(pp.get("ingress", [])) == 2)
    egress = pp.get("egress", [])
    to_agents = [r for r in egress if any(labels_match(p.get("podSelector", {}).get("matchLabels"), agent_labels)
                                          and "namespaceSelector" not in p for p in r.get("to", []))]
    R.check(f"{t}: proxy egress reaches the agents on {RPC_PORT}",
            len(to_agents) == 1 and [p["port"] for p in to_agents[0]["ports"]] == [RPC_PORT])
    egress_ports = sorted({p["port"] for r in egress for p in r.get("ports", [])})
    want_ports = sorted(PROXY_EGRESS_PORTS_BY_TARGET.get(t, PROXY_EGRESS_PORTS))
    R.check(f"{t}: proxy egress only to agents, DNS and the API server", egress_ports == want_ports,
            f"ports {egress_ports}, expected {want_ports}")
    ap = pols.get("sigsci-agent", {}).get("spec", {})
    R.check(f"{t}: agent NetworkPolicy selects the agent pods",
            labels_match(ap.get("podSelector", {}).get("matchLabels"), agent_labels))
    R.check(f"{t}: agent ingress: {RPC_PORT} only from proxy pods",
            ap.get("ingress") == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": proxy["labels"]["app.kubernetes.io/name"]}}}],
                                   "ports": [{"port": RPC_PORT, "protocol": "TCP"}]}], f"{ap.get('ingress')}")
    a_ports = sorted({p["port"] for r in ap.get("egress", []) for p in r.get("ports", [])})
    R.check(f"{t}: agent egress only to DNS and HTTPS", a_ports == [53, 443], f"ports {a_ports}")


def check_security(t, docs):
    for obj in docs:
        if obj["kind"] not in ("Deployment", "DaemonSet", "Job"):
            continue
        spec = pod_spec(obj)
        psc = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = c.get("securityContext", {})
            ok = (psc.get("runAsNonRoot") is True and isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0
                  and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
                  and sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                  and sc.get("capabilities", {}).get("drop") == ["ALL"]
                  and "requests" in c.get("resources", {}) and "limits" in c.get("resources", {}))
            R.check(f"{t}: {obj['kind']}/{obj['metadata']['name']}/{c['name']} runs non-root, read-only, "
                    f"no capabilities, RuntimeDefault seccomp, with requests and limits", ok)


def check_skips(t, docs):
    for obj in docs:
        for key, value in obj["metadata"].get("annotations", {}).items():
            if key.startswith("checkov.io/skip"):
                R.check(f"{t}: {obj['kind']}/{obj['metadata']['name']} {key} names a check and a reason",
                        re.fullmatch(r"CKV2?_K8S_\d+=.{30,}", value) is not None, value)


def check_autoscaling(t, docs, proxy, source):
    agent = one(docs, "Deployment", "sigsci-agent")
    hpa = find(docs, "HorizontalPodAutoscaler")
    so = find(docs, "ScaledObject")
    if hpa or so:
        R.check(f"{t}: autoscaled agent Deployment leaves replicas to the autoscaler", "replicas" not in agent["spec"])
        R.check(f"{t}: never an HPA and a ScaledObject together", not (hpa and so))
    for h in hpa:
        ref = h["spec"]["scaleTargetRef"]
        R.check(f"{t}: HPA targets Deployment sigsci-agent", ref["kind"] == "Deployment" and ref["name"] == "sigsci-agent")
        ext = [m["external"] for m in h["spec"]["metrics"] if m["type"] == "External"]
        cpu = [m for m in h["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"]
        R.check(f"{t}: HPA External metric is {METRIC}, with a CPU metric beside it",
                len(ext) == 1 and ext[0]["metric"]["name"] == METRIC and len(cpu) == 1)
        R.check(f"{t}: HPA scale-down is stabilized",
                h["spec"].get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds", 0) >= 60)
    for s in so:
        R.check(f"{t}: ScaledObject targets Deployment sigsci-agent", s["spec"]["scaleTargetRef"]["name"] == "sigsci-agent")
        prom = [tr for tr in s["spec"]["triggers"] if tr["type"] == "prometheus"]
        q = prom[0]["metadata"]["query"] if prom else ""
        R.check(f"{t}: KEDA query sums {METRIC} in the proxy's namespace ({proxy['ns']})",
                METRIC in q and f'namespace="{proxy["ns"]}"' in q and "sum(" in q, q)
    for pm in find(docs, "PodMonitor"):
        R.check(f"{t}: PodMonitor scrapes the proxies' admin port /metrics",
                labels_match(pm["spec"]["selector"]["matchLabels"], proxy["labels"])
                and [(e["port"], e.get("path")) for e in pm["spec"]["podMetricsEndpoints"]] == [("admin", "/metrics")])
    if (hpa or so) and source["metric_known"] is not None:
        R.check(f"{t}: metric {METRIC} is exported by the proxy's sources", source["metric_known"])


def check_example(docs, job_docs, proxy, node_server):
    host = f"{proxy['service']}.{proxy['ns']}.svc"
    app = one(docs, "Deployment", "example-app")
    c = pod_spec(app)["containers"][0]
    R.check(f"example-app: module RPC address is {host}:{proxy['rpc_port']}",
            env_value(c, "SIGSCI_RPC_HOST") == host and env_value(c, "SIGSCI_RPC_PORT") == str(proxy["rpc_port"]),
            f"{env_value(c, 'SIGSCI_RPC_HOST')}:{env_value(c, 'SIGSCI_RPC_PORT')}")
    R.check("example-app: PORT env = container port http = probes' port",
            env_value(c, "PORT") == str(container_port(c, "http"))
            and c["readinessProbe"]["httpGet"]["port"] == "http")
    if node_server is not None:
        for name in ("SIGSCI_RPC_HOST", "SIGSCI_RPC_PORT", "PORT"):
            R.check(f"example-app: loadtest/node/server.js reads {name}", name in node_server)
        R.check("example-app: loadtest/node/server.js serves the probe path /healthz", "/healthz" in node_server)
    job = one(job_docs, "Job", "loadtest")
    args = pod_spec(job)["containers"][0]["args"]
    target = args[args.index("--target") + 1] if "--target" in args else None
    R.check(f"example-app: loadtest Job drives {host}:{proxy['rpc_port']}",
            args[0] == "drive" and target == f"{host}:{proxy['rpc_port']}", f"{args}")
    ns = one(docs, "Namespace", app["metadata"]["namespace"])
    R.check(f"example-app: its namespace is labelled {CLIENT_LABEL[0]}={CLIENT_LABEL[1]}",
            ns is not None and ns["metadata"].get("labels", {}).get(CLIENT_LABEL[0]) == CLIENT_LABEL[1])
    egress = [p for p in find(docs, "NetworkPolicy") if p["metadata"]["name"] == "to-sigsci-proxy"]
    to = egress[0]["spec"]["egress"][0] if egress else {}
    R.check("example-app: egress policy reaches the proxy pods on the RPC port in the proxy's namespace",
            bool(to) and to["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": proxy["ns"]}
            and labels_match(to["to"][0]["podSelector"]["matchLabels"], proxy["labels"])
            and [p["port"] for p in to["ports"]] == [proxy["rpc_port"]])


def check_dockerfiles(root, source):
    specs = {
        "docker/proxy.Dockerfile": ("sigsci-proxy", "proxy/Cargo.toml"),
        "docker/loadtest.Dockerfile": ("loadtest", "loadtest/Cargo.toml"),
    }
    for path, (binary, cargo) in specs.items():
        text = read(root, path) or ""
        manifest = read(root, cargo) or ""
        pkg = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', manifest, re.M | re.S)
        bins = re.findall(r'^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"', manifest, re.M | re.S)
        R.check(f"{path}: builds -p {pkg and pkg.group(1)} --bin {binary}, a bin of {cargo}",
                pkg is not None and binary in bins and f"-p {pkg.group(1)} --bin {binary}" in text, f"bins {bins}")
        R.check(f"{path}: ENTRYPOINT is /{binary}", f'ENTRYPOINT ["/{binary}"]' in text)
        R.check(f"{path}: multi-stage, pinned Rust builder, distroless runtime, numeric non-root user",
                re.search(r"^FROM rust:1\.\d+\.\d+-bookworm AS build$", text, re.M) is not None
                and re.search(r"^FROM gcr\.io/distroless/cc-debian12:nonroot$", text, re.M) is not None
                and re.search(r"^USER 65532:65532$", text, re.M) is not None)
    text = read(root, "docker/example-app.Dockerfile") or ""
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in src.split():
            R.check(f"docker/example-app.Dockerfile: COPY source {item} exists",
                    bool(glob.glob(os.path.join(root, item))))
    R.check("docker/example-app.Dockerfile: numeric non-root user", "USER 65532:65532" in text)
    for path in glob.glob(os.path.join(root, "docker", "*.Dockerfile")):
        for reason in re.findall(r"#\s*checkov:skip=\S+:(.*)", open(path).read()):
            R.check(f"{os.path.relpath(path, root)}: checkov skip has a reason", len(reason.strip()) >= 30, reason)
    ignore = read(root, ".dockerignore") or ""
    for entry in ("target", ".git", ".venv", "**/node_modules"):
        R.check(f".dockerignore keeps {entry} out of the build context", entry in ignore.split())


def source_facts(root):
    proxy_src = rust_sources(root, "proxy/src")
    pool_src = rust_sources(root, "agent-pool/src")
    facts = {}
    env = set(re.findall(r'"(SIGSCI_PROXY_[A-Z0-9_]+)"', proxy_src))
    facts["proxy_env"] = env or None
    k8s = read(root, "agent-pool/src/source/kubernetes.rs")
    m = k8s and re.search(r"REQUIRED_VERBS\s*:[^=]*=\s*&?\[([^\]]*)\]", k8s)
    facts["verbs"] = re.findall(r'"([a-z]+)"', m.group(1)) if m else None
    g = k8s and re.search(r'RBAC_API_GROUP\s*:[^=]*=\s*"([^"]+)"', k8s)
    r = k8s and re.search(r'RBAC_RESOURCE\s*:[^=]*=\s*"([^"]+)"', k8s)
    facts["group"] = g.group(1) if g else FALLBACK_API_GROUP
    facts["resource"] = r.group(1) if r else FALLBACK_RESOURCE
    everything = proxy_src + pool_src
    facts["metric_known"] = (METRIC in everything) if "sigsci_proxy_" in everything else None
    facts["proxy_entrypoint"] = "/sigsci-proxy"
    text = read(root, "docker/proxy.Dockerfile") or ""
    m = re.search(r'^ENTRYPOINT \["([^"]+)"', text, re.M)
    if m:
        facts["proxy_entrypoint"] = m.group(1)
    return facts


def check_loadtest_cluster(docs):
    """The cluster-mode Job's RBAC is what loadtest/src/cluster/api.rs uses, in the namespace it
    acts on, bound to the ServiceAccount the Job runs as."""
    job = one(docs, "Job", "loadtest-cluster")
    if not R.check("loadtest-cluster: one Job loadtest-cluster", job is not None):
        return
    spec = job["spec"]["template"]["spec"]
    args = spec["containers"][0].get("args", [])
    ns = args[args.index("--namespace") + 1] if "--namespace" in args else "sigsci"
    role = one(docs, "Role", "loadtest-cluster")
    binding = one(docs, "RoleBinding", "loadtest-cluster")
    if not R.check("loadtest-cluster: Role and RoleBinding loadtest-cluster", role is not None and binding is not None):
        return
    R.check(f"loadtest-cluster: Role in the namespace the Job acts on ({ns})",
            role["metadata"].get("namespace") == ns, role["metadata"].get("namespace"))
    rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    want = {("apps", "deployments"): ["get"],
            ("apps", "deployments/scale"): ["get", "patch", "update"],
            ("", "pods"): ["delete", "list"],
            ("", "pods/proxy"): ["create", "get"]}
    R.check("loadtest-cluster: Role = scale subresource, pods list/delete, pods/proxy get/create",
            rules == want, rules)
    sa = spec.get("serviceAccountName")
    subjects = [(x.get("kind"), x.get("name"), x.get("namespace")) for x in binding.get("subjects", [])]
    R.check("loadtest-cluster: RoleBinding names the Job's ServiceAccount in the Job's namespace",
            ("ServiceAccount", sa, job["metadata"].get("namespace")) in subjects, subjects)


def main(argv):
    root, rendered = argv[1], argv[2]
    source = source_facts(root)
    verbs = source["verbs"] or FALLBACK_VERBS
    print(f"RBAC verbs from {'agent-pool/src/source/kubernetes.rs REQUIRED_VERBS' if source['verbs'] else 'the fallback list (REQUIRED_VERBS not exported yet)'}: {verbs}")
    print(f"proxy env names from {'proxy/src' if source['proxy_env'] else 'the agreed list (proxy/src names none yet)'}")
    print(f"metric {METRIC}: {'checked against the sources' if source['metric_known'] is not None else 'sources export no sigsci_proxy_* metric yet; agreed name used'}")
    if source["proxy_env"]:
        src_text = rust_sources(root, "proxy/src")
        for port in (RPC_PORT, ADMIN_PORT):
            R.check(f"proxy/src states the default port {port}", f":{port}" in src_text or str(port) in src_text)
    targets = sorted(f[:-5] for f in os.listdir(rendered) if f.endswith(".yaml"))
    proxy_prod = None
    for t in targets:
        docs = load(rendered, t)
        check_security(t, docs)
        check_skips(t, docs)
        if t == "loadtest-cluster":
            check_loadtest_cluster(docs)
        if t in ("example-app", "loadtest", "loadtest-cluster", "cluster"):
            continue
        proxy = check_proxy(t, docs, source)
        if proxy is None:
            continue
        check_rbac(t, docs, verbs, source["group"], source["resource"])
        check_agents(t, docs, proxy)
        check_netpol(t, docs, proxy)
        check_autoscaling(t, docs, proxy, source)
        if t == "production":
            proxy_prod = proxy
    for t in PROXY_TARGETS:
        R.check(f"target {t} was rendered", t in targets)
    if "example-app" in targets and R.check("production proxy found for the example-app checks", proxy_prod is not None):
        check_example(load(rendered, "example-app"), load(rendered, "loadtest"), proxy_prod,
                      read(root, "loadtest/node/server.js"))
    check_dockerfiles(root, source)
    print(f"consistency: {R.passed} passed, {R.failed} failed")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
