#!/usr/bin/env python3
"""What a cluster operator relies on, checked on the rendered manifests.

Usage: operations.py REPO_ROOT RENDERED_DIR

Each check names the behaviour it protects; a failure prints what was found. Schemas and
cross-references are consistency.py's; this file checks the operational choices: start-up
and health probes, sizing, disruption budgets, placement, the autoscaling signal, the
optional NetworkPolicy components, the images and the LICENSE. Warnings (not failures) are
printed for what only the user can settle, such as the production digest placeholder.
"""

import math
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import consistency  # noqa: E402
from consistency import (  # noqa: E402
    container_port, cpu, env_of, env_value, find, labels_match, load, one, pod_spec, read)

STARTUP_PORT = 2024
STARTUP_PATH = "/startup"
STARTUP_LISTENER = f"[::]:{STARTUP_PORT}"  # all addresses, IPv4 and IPv6
IPV4_ONLY_TARGETS = {"ipv4-only", "ipv4-only-node-local"}  # components/ipv4-only: 0.0.0.0 for kernels without IPv6
# The agent's startup probe listener exists from 4.51.0; Fastly supports versions for two
# years. The oldest version accepted here; raise it as releases age out.
MIN_AGENT_VERSION = (4, 51, 0)
MIN_AGENT_MEMORY_BYTES = 500 * 10**6  # Fastly: at least 500 MB per agent
MEMORY_HEADROOM_BYTES = 500 * 10**6  # at least 500 MB above that: the agent grows past its floor under load
DEMAND_METRIC = "sigsci_proxy_agent_demand"
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
# Targets with the real agent (not the simulator), and every target with both Deployments.
REAL_AGENT_TARGETS = ["base", "production", "autoscaling", "autoscaling-keda", "monitoring",
                      "autoscaling-monitoring", "autoscaling-keda-monitoring", "node-local",
                      "netpol-cilium", "netpol-apiserver-port", "netpol-nodelocal-dns"]
# Overlays a user applies to an autoscaled install: none may set the agents' replicas.
AUTOSCALED_TARGETS = ["autoscaling", "autoscaling-keda", "autoscaling-monitoring", "autoscaling-keda-monitoring"]
AGENT_HPA_NAME = "sigsci-agent"
PRIORITY_CLASS = "sigsci-proxy"
NODE_SOCKET = "unix:/sigsci/tmp/sigsci.sock"
NODELOCAL_ADDRESS = "169.254.20.10/32"
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
MICROK8S_API_PORT = 16443


class Results(consistency.Results):
    """consistency's checks, and warnings that do not fail the run."""

    def __init__(self):
        super().__init__()
        self.warnings = 0

    def warn(self, text):
        self.warnings += 1
        print(f"WARN {text}")


R = Results()


def memory(quantity):
    """A memory quantity ("1Gi", "500M", "512Mi", "1000000000") in bytes; 0 if unreadable."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(quantity or ""))
    if not m:
        return 0
    unit = m.group(2) or ""
    factor = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[unit]
    return float(m.group(1)) * factor


def container(obj, name):
    for c in pod_spec(obj)["containers"]:
        if c["name"] == name:
            return c
    return None


def probe_port(c, probe):
    action = probe.get("httpGet") or probe.get("tcpSocket") or {}
    return container_port(c, action.get("port"))


# ---------------------------------------------------------------------------- agents
def check_agent(t, docs):
    agent = one(docs, "Deployment", "sigsci-agent")
    if agent is None:
        return
    listener_want = f"0.0.0.0:{STARTUP_PORT}" if t in IPV4_ONLY_TARGETS else STARTUP_LISTENER
    c = container(agent, "sigsci-agent")
    simulated = (c.get("args") or [None])[0] == "agent"
    # (1) Start-up: not Ready, and not killed, until the rules are loaded.
    sp = c.get("startupProbe", {})
    get = sp.get("httpGet", {})
    R.check(f"{t}: agent startupProbe is GET {STARTUP_PATH} on port {STARTUP_PORT}",
            get.get("path") == STARTUP_PATH and probe_port(c, sp) == STARTUP_PORT, f"{sp}")
    budget = sp.get("failureThreshold", 3) * sp.get("periodSeconds", 10)
    R.check(f"{t}: agent startupProbe allows at least 2 minutes to load rules ({budget} s)", budget >= 120)
    if simulated:
        args = c["args"]
        listener = args[args.index("--startup-probe") + 1] if "--startup-probe" in args else None
        R.check(f"{t}: simulated agent serves the startup probe (--startup-probe {listener_want}) "
                "after a --startup-delay", listener == listener_want and "--startup-delay" in args, f"{args}")
    else:
        R.check(f"{t}: agent SIGSCI_STARTUP_PROBE_LISTENER is {listener_want}",
                env_value(c, "SIGSCI_STARTUP_PROBE_LISTENER") == listener_want,
                env_value(c, "SIGSCI_STARTUP_PROBE_LISTENER"))
    ready, live = c.get("readinessProbe"), c.get("livenessProbe")
    R.check(f"{t}: agent has readiness and liveness probes, neither on the startup endpoint, "
            "and they differ", bool(ready) and bool(live) and ready != live
            and all(probe_port(c, p) != STARTUP_PORT for p in (ready, live)), f"{ready} {live}")
    R.check(f"{t}: agent liveness waits for the startup probe, not a fixed delay",
            bool(live) and not live.get("initialDelaySeconds"), f"{live}")
    # (2) CPU and memory.
    res = c.get("resources", {})
    limit_cpu = cpu(res.get("limits", {}).get("cpu"))
    procs = env_of(c).get("SIGSCI_MAX_PROCS", {})
    ref = procs.get("valueFrom", {}).get("resourceFieldRef", {})
    by_ref = (ref.get("resource") == "limits.cpu" and ref.get("containerName", c["name"]) == c["name"]
              and str(ref.get("divisor", "1")) == "1")
    literal = procs.get("value")
    R.check(f"{t}: agent SIGSCI_MAX_PROCS = its CPU limit ({limit_cpu}) rounded up",
            limit_cpu > 0 and (by_ref or (literal is not None and literal.isdigit()
                                          and int(literal) == math.ceil(limit_cpu))), f"{procs}")
    if not simulated:
        req_cpu = cpu(res.get("requests", {}).get("cpu"))
        R.check(f"{t}: agent requests at least one CPU ({req_cpu})", req_cpu >= 1)
        req_mem = memory(res.get("requests", {}).get("memory"))
        lim_mem = memory(res.get("limits", {}).get("memory"))
        R.check(f"{t}: agent requests at least 500 MB and may use 500 MB more "
                f"({req_mem / 1e6:.0f} MB / {lim_mem / 1e6:.0f} MB)",
                req_mem >= MIN_AGENT_MEMORY_BYTES and lim_mem >= MIN_AGENT_MEMORY_BYTES + MEMORY_HEADROOM_BYTES)
        m = re.fullmatch(r"signalsciences/sigsci-agent:(\d+)\.(\d+)\.(\d+)(@sha256:[0-9a-f]{64})?", c["image"])
        R.check(f"{t}: agent version is {'.'.join(map(str, MIN_AGENT_VERSION))} or later (startup probe)",
                m is not None and tuple(int(x) for x in m.groups()[:3]) >= MIN_AGENT_VERSION, c["image"])
    # (6) Zone spread.
    spread = pod_spec(agent).get("topologySpreadConstraints", [])
    R.check(f"{t}: agents spread over zones",
            any(s["topologyKey"] == "topology.kubernetes.io/zone"
                and labels_match(s.get("labelSelector", {}).get("matchLabels"),
                                 agent["spec"]["template"]["metadata"]["labels"]) for s in spread))


def check_production_digest(docs, base_docs):
    agent = one(docs, "Deployment", "sigsci-agent")
    image = container(agent, "sigsci-agent")["image"]
    m = re.fullmatch(r"(signalsciences/sigsci-agent):([^@]+)@(sha256:[0-9a-f]{64})", image)
    if not R.check("production: agent image pinned by tag and digest (name:tag@sha256:...)", m is not None, image):
        return
    base_image = container(one(base_docs, "Deployment", "sigsci-agent"), "sigsci-agent")["image"]
    R.check("production: the pinned tag is the base's", f"{m.group(1)}:{m.group(2)}" == base_image,
            f"{image} vs base {base_image}")
    if m.group(3) == PLACEHOLDER_DIGEST:
        R.warn("production: the agent digest is the all-zero PLACEHOLDER (no registry reachable when "
               "written): pulls fail until it is set; see manifests/overlays/production/kustomization.yaml")


def check_namespaced(t, docs):
    """Objects from components are outside the base's `namespace:`: each must name one, or
    `kubectl apply -k` puts it in the context's namespace, away from what it refers to."""
    missing = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
               if d["kind"] not in CLUSTER_SCOPED and not d["metadata"].get("namespace")]
    R.check(f"{t}: every namespaced object names its namespace", not missing, f"none on {missing}")


# ---------------------------------------------------------------------------- proxy
def check_proxy(t, docs):
    name = None
    daemonset = one(docs, "DaemonSet", "sigsci-proxy")
    if daemonset is not None:
        name = pod_spec(daemonset).get("priorityClassName")
        R.check(f"{t}: node-local proxy runs with the PriorityClass {PRIORITY_CLASS}", name == PRIORITY_CLASS, f"{name}")
    proxy = one(docs, "Deployment", "sigsci-proxy")
    if proxy is None:
        return
    spec = pod_spec(proxy)
    labels = proxy["spec"]["template"]["metadata"]["labels"]
    spread = spec.get("topologySpreadConstraints", [])
    hard = [s for s in spread if s["topologyKey"] == "kubernetes.io/hostname"
            and s.get("whenUnsatisfiable") == "DoNotSchedule" and s.get("maxSkew") == 1
            and labels_match(s.get("labelSelector", {}).get("matchLabels"), labels)]
    R.check(f"{t}: proxy spread over nodes is hard (DoNotSchedule, maxSkew 1)", len(hard) == 1, f"{spread}")
    R.check(f"{t}: proxy spread over zones",
            any(s["topologyKey"] == "topology.kubernetes.io/zone" for s in spread), f"{spread}")
    name = spec.get("priorityClassName")
    R.check(f"{t}: proxy runs with the PriorityClass {PRIORITY_CLASS} (manifests/cluster)", name == PRIORITY_CLASS, f"{name}")


def check_pdbs(t, docs):
    for name in ("sigsci-agent", "sigsci-proxy"):
        pdb = one(docs, "PodDisruptionBudget", name)
        if pdb is None:
            continue
        policy = pdb["spec"].get("unhealthyPodEvictionPolicy")
        R.check(f"{t}: PodDisruptionBudget {name} lets drains evict unhealthy pods (AlwaysAllow)",
                policy == "AlwaysAllow", f"{policy}")


# ---------------------------------------------------------------------------- autoscaling
def check_autoscaling(t, docs, proxy_src):
    for h in find(docs, "HorizontalPodAutoscaler"):
        ext = [m["external"] for m in h["spec"]["metrics"] if m["type"] == "External"]
        R.check(f"{t}: HPA scales on {DEMAND_METRIC}, one agent per unit (AverageValue 1)",
                len(ext) == 1 and ext[0]["metric"]["name"] == DEMAND_METRIC
                and ext[0]["target"] == {"type": "AverageValue", "averageValue": "1"}, f"{ext}")
    for so in find(docs, "ScaledObject"):
        prom = [tr for tr in so["spec"]["triggers"] if tr["type"] == "prometheus"]
        q = prom[0]["metadata"]["query"].replace(" ", "") if prom else ""
        # Not rounded in the query: the HPA KEDA creates rounds up once, after its 10 % tolerance
        # (a pre-rounded sum defeats the tolerance: docs/autoscaling.md, closed-loop measurements).
        R.check(f"{t}: KEDA query sums {DEMAND_METRIC} over the replicas, unrounded (the HPA rounds up once)",
                re.fullmatch(rf"sum\({DEMAND_METRIC}\{{[^}}]*\}}\)", q) is not None, q)
        R.check(f"{t}: KEDA prometheus trigger is AverageValue (the only kind fallback covers)",
                bool(prom) and prom[0].get("metricType") == "AverageValue")
        fb = so["spec"].get("fallback", {})
        R.check(f"{t}: KEDA has a fallback replica count, within min..max",
                fb.get("failureThreshold", 0) > 0
                and so["spec"]["minReplicaCount"] <= fb.get("replicas", -1) <= so["spec"]["maxReplicaCount"], f"{fb}")
        R.check(f"{t}: KEDA's HPA has the scale-down stabilization window",
                so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
                .get("scaleDown", {}).get("stabilizationWindowSeconds", 0) >= 60)


# ---------------------------------------------------------------------- composition of overlays
def agent_replicas(docs):
    agent = one(docs, "Deployment", "sigsci-agent")
    return None if agent is None else agent["spec"].get("replicas")


def check_composition(targets, rendered):
    """Overlays that compose: autoscaled overlays leave the agents' replicas alone, components
    add no replica count, the shared PriorityClass is only in manifests/cluster, KEDA's HPA has
    the name the alert and dashboard select, its fallback never pulls a larger pool down."""
    for t in AUTOSCALED_TARGETS:
        R.check(f"target {t} (autoscaled) was rendered", t in targets)
    for t in targets:
        docs = load(rendered, t)
        scalers = [h for h in find(docs, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == "sigsci-agent"] \
            + [so for so in find(docs, "ScaledObject") if so["spec"]["scaleTargetRef"]["name"] == "sigsci-agent"]
        if scalers or t in AUTOSCALED_TARGETS:
            R.check(f"{t}: autoscaled, and the agent Deployment sets no replicas (re-applying it never "
                    "resets the pool)", bool(scalers) and agent_replicas(docs) is None, f"replicas {agent_replicas(docs)}")
        pcs = find(docs, "PriorityClass")
        if t == "cluster":
            pc = one(docs, "PriorityClass", PRIORITY_CLASS)
            R.check(f"cluster: PriorityClass {PRIORITY_CLASS}, above the default, below the system classes, not global",
                    pc is not None and 0 < pc.get("value", 0) < 1_000_000_000 and not pc.get("globalDefault", False)
                    and len(docs) == 1, f"{docs}")
        else:
            R.check(f"{t}: no PriorityClass (cluster-scoped and shared by every site: manifests/cluster only, so "
                    "`kubectl delete -k` of one site never deletes it)", not pcs)
        for so in find(docs, "ScaledObject"):
            hpa_cfg = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
            R.check(f"{t}: KEDA names its HPA {AGENT_HPA_NAME} (what SigsciAgentHpaAtMaximum and the dashboard select)",
                    hpa_cfg.get("name") == AGENT_HPA_NAME, f"{hpa_cfg.get('name')}")
            R.check(f"{t}: KEDA's fallback never pulls a larger pool down (behavior currentReplicasIfHigher)",
                    so["spec"].get("fallback", {}).get("behavior") == "currentReplicasIfHigher")
        for h in find(docs, "HorizontalPodAutoscaler"):
            R.check(f"{t}: the agent HPA is named {AGENT_HPA_NAME}", h["metadata"]["name"] == AGENT_HPA_NAME)
        for rule in find(docs, "PrometheusRule"):
            text = str(rule)
            R.check(f"{t}: the HPA alert selects horizontalpodautoscaler=\"{AGENT_HPA_NAME}\"",
                    f'horizontalpodautoscaler="{AGENT_HPA_NAME}"' in text)
            alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
            R.check(f"{t}: alerts for absent and unscraped proxies (SigsciProxyAbsent, SigsciProxyDown)",
                    "SigsciProxyAbsent" in alerts and "SigsciProxyDown" in alerts, f"{alerts}")
        # Dual-stack: every "anywhere" ipBlock has its IPv6 twin in the same peer list.
        for pol in find(docs, "NetworkPolicy"):
            for direction, key in (("ingress", "from"), ("egress", "to")):
                for rule in pol["spec"].get(direction, []):
                    cidrs = [p.get("ipBlock", {}).get("cidr") for p in rule.get(key, [])]
                    if "0.0.0.0/0" in cidrs:
                        R.check(f"{t}: NetworkPolicy {pol['metadata']['name']} {direction}: ::/0 beside 0.0.0.0/0",
                                "::/0" in cidrs, f"{cidrs}")
    if "monitoring-component" in targets and "production" in targets:
        R.check("components/monitoring on production adds no agent replica count of its own",
                agent_replicas(load(rendered, "monitoring-component")) == agent_replicas(load(rendered, "production")))
    for t in ("node-local", "node-local-socket"):
        if not R.check(f"target {t} was rendered", t in targets):
            continue
        docs = load(rendered, t)
        ds = one(docs, "DaemonSet", "sigsci-proxy")
        if not R.check(f"{t}: the proxy is a DaemonSet, and no proxy Deployment is left",
                       ds is not None and one(docs, "Deployment", "sigsci-proxy") is None):
            continue
        svc = one(docs, "Service", "sigsci-proxy")
        R.check(f"{t}: Service sigsci-proxy has internalTrafficPolicy Local",
                svc is not None and svc["spec"].get("internalTrafficPolicy") == "Local")
        ru = ds["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
        listen = env_value(container(ds, "sigsci-proxy"), "SIGSCI_PROXY_LISTEN") or ""
        vols = pod_spec(ds).get("volumes", [])
        host = [v for v in vols if "hostPath" in v]
        ns = one(docs, "Namespace", ds["metadata"]["namespace"])
        level = ns["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") if ns else None
        if t == "node-local":
            R.check("node-local: rolls with maxSurge 1, maxUnavailable 0 (no node without a ready proxy)",
                    ru.get("maxSurge") == 1 and ru.get("maxUnavailable") == 0, f"{ru}")
            R.check("node-local: TCP only, no hostPath, namespace stays restricted",
                    NODE_SOCKET not in listen and not host and level == "restricted", f"{listen} {host} {level}")
        else:
            R.check(f"node-local-socket: the proxy also listens on {NODE_SOCKET}", NODE_SOCKET in listen.split(","), listen)
            R.check("node-local-socket: the socket's directory is a hostPath (type Directory) at /sigsci/tmp",
                    len(host) == 1 and host[0]["hostPath"].get("type") == "Directory"
                    and any(m["mountPath"] == "/sigsci/tmp" and m["name"] == host[0]["name"]
                            for m in container(ds, "sigsci-proxy").get("volumeMounts", [])), f"{host}")
            R.check("node-local-socket: the namespace enforces Pod Security privileged (the only level allowing "
                    "hostPath), audit and warn restricted",
                    level == "privileged" and ns["metadata"]["labels"].get("pod-security.kubernetes.io/warn") == "restricted")
            R.check("node-local-socket: rolls with maxSurge 0 (one live socket per path: a second proxy cannot bind it)",
                    ru.get("maxSurge") == 0 and ru.get("maxUnavailable") == 1, f"{ru}")


def check_signal_sources(root):
    proxy_src = ""
    for d, _, files in os.walk(os.path.join(root, "proxy", "src")):
        for f in files:
            if f.endswith(".rs"):
                proxy_src += open(os.path.join(d, f)).read()
    hints = read(root, "agent-pool/src/hints.rs") or ""
    R.check(f"proxy/src exports the gauge {DEMAND_METRIC}", f"{DEMAND_METRIC} gauge" in proxy_src)
    R.check("the proxy has no scale-down window of its own (the HPA's is the only one)",
            "SCALE_DOWN_WINDOW" not in proxy_src and "scale_down_window" not in hints)
    R.check("agent-pool's demand is neither rounded nor floored (Hints::demand is an f64)",
            re.search(r"pub demand: f64", hints) is not None)
    return proxy_src


# ---------------------------------------------------------------------------- network policies
def egress_of(docs, name):
    pol = one(docs, "NetworkPolicy", name)
    return pol["spec"].get("egress", []) if pol else []


def api_rule(egress):
    rules = [r for r in egress if any(p.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for p in r.get("to", []))
             and any(p["port"] in (443, 6443) for p in r.get("ports", []))]
    return rules[0] if len(rules) == 1 else None


def check_netpol_components(targets, rendered):
    if "netpol-cilium" in targets:
        docs = load(rendered, "netpol-cilium")
        proxy_labels = one(docs, "Deployment", "sigsci-proxy")["spec"]["template"]["metadata"]["labels"]
        cnps = [p for p in find(docs, "CiliumNetworkPolicy")
                if labels_match(p["spec"]["endpointSelector"].get("matchLabels"), proxy_labels)]
        R.check("netpol-cilium: a CiliumNetworkPolicy lets the proxy pods reach toEntities kube-apiserver",
                len(cnps) == 1 and cnps[0]["spec"]["egress"] == [{"toEntities": ["kube-apiserver"]}]
                and cnps[0]["metadata"].get("namespace") == one(docs, "Deployment", "sigsci-proxy")["metadata"]["namespace"],
                f"{cnps}")
        egress = egress_of(docs, "sigsci-proxy")
        R.check("netpol-cilium: the base's ipBlock 0.0.0.0/0 API-server rule is gone, the rest kept",
                api_rule(egress) is None and len(egress) == len(egress_of(load(rendered, "production"), "sigsci-proxy")) - 1,
                f"{egress}")
    for t in ("netpol-apiserver-port", "netpol-microk8s"):
        if t in targets:
            rule = api_rule(egress_of(load(rendered, t), "sigsci-proxy"))
            ports = sorted(p["port"] for p in rule["ports"]) if rule else None
            R.check(f"{t}: the proxy's API-server egress adds port {MICROK8S_API_PORT} to 443 and 6443",
                    ports == [443, 6443, MICROK8S_API_PORT], f"{ports}")
    for t in ("netpol-nodelocal-dns", "netpol-microk8s"):
        if t not in targets:
            continue
        docs = load(rendered, t)
        for name in ("sigsci-proxy", "sigsci-agent"):
            ok = any(any(p.get("ipBlock", {}).get("cidr") == NODELOCAL_ADDRESS for p in r.get("to", []))
                     and sorted((p["port"], p["protocol"]) for p in r.get("ports", [])) == [(53, "TCP"), (53, "UDP")]
                     for r in egress_of(docs, name))
            R.check(f"{t}: {name} may query NodeLocal DNSCache ({NODELOCAL_ADDRESS}, 53 UDP and TCP)", ok)
    for t in ("netpol-cilium", "netpol-apiserver-port", "netpol-nodelocal-dns", "netpol-microk8s"):
        R.check(f"target {t} was rendered", t in targets)


# ---------------------------------------------------------------------------- images, overlays, docs
def check_images_and_docs(root, targets, rendered):
    for path in ("docker/proxy.Dockerfile", "docker/loadtest.Dockerfile"):
        text = read(root, path) or ""
        R.check(f"{path}: the release binary is stripped", "CARGO_PROFILE_RELEASE_STRIP=symbols" in text)
        R.check(f"{path}: the target cache is kept per platform (multi-arch builds)",
                re.search(r"target=/src/target,id=[^,\s]*\$\{TARGETPLATFORM\}", text) is not None
                and "ARG TARGETPLATFORM" in text)
    for path in ("docker/proxy.Dockerfile", "docker/loadtest.Dockerfile", "docker/example-app.Dockerfile"):
        text = read(root, path) or ""
        for label in ("title", "version", "revision", "licenses"):
            R.check(f"{path}: OCI label org.opencontainers.image.{label}", f"org.opencontainers.image.{label}=" in text)
    text = read(root, "docker/example-app.Dockerfile") or ""
    majors = re.findall(r"^FROM \S*node(?:js)?:?(\d+)", text, re.M)
    R.check("docker/example-app.Dockerfile: both stages on a Node LTS (22 or 24), the same one",
            len(majors) == 2 and majors[0] == majors[1] and majors[0] in ("22", "24"), f"{majors}")
    guide = read(root, "manifests/README.md") or ""
    R.check("manifests/README.md: the image commands build amd64 and arm64 with buildx and push",
            "docker buildx build --platform linux/amd64,linux/arm64" in guide and "--push" in guide)
    readme = read(root, "README.md") or ""
    short = readme.split("## Deploy to Kubernetes", 1)[-1].split("\n## ", 1)[0]
    R.check("README.md: the deploy 'in short' builds and pushes the images before applying",
            "docker buildx build" in short and "--push" in short
            and short.find("docker buildx build") < short.find("kubectl apply -k"))
    if "example-app" in targets and "loadtest" in targets:
        R.check("example-app overlay has no Job (re-applying it never re-runs the load test)",
                not find(load(rendered, "example-app"), "Job"))
        jobs = find(load(rendered, "loadtest"), "Job")
        R.check("loadtest overlay is the load-test Job alone, in the example namespace",
                len(jobs) == 1 and len(load(rendered, "loadtest")) == 1
                and jobs[0]["metadata"]["namespace"] == "sigsci-example")
    lic = read(root, "LICENSE") or ""
    R.check("LICENSE is the full Apache License 2.0 text",
            "Apache License" in lic and "Version 2.0, January 2004" in lic
            and "END OF TERMS AND CONDITIONS" in lic and len(lic) > 10_000)


def main(argv):
    root, rendered = argv[1], argv[2]
    targets = sorted(f[:-5] for f in os.listdir(rendered) if f.endswith(".yaml"))
    check_signal_sources(root)
    for t in targets:
        docs = load(rendered, t)
        check_namespaced(t, docs)
        check_agent(t, docs)
        check_proxy(t, docs)
        check_pdbs(t, docs)
        check_autoscaling(t, docs, None)
    for t in REAL_AGENT_TARGETS:
        R.check(f"target {t} (real agent) was rendered", t in targets)
    if "production" in targets and "base" in targets:
        check_production_digest(load(rendered, "production"), load(rendered, "base"))
    check_netpol_components(targets, rendered)
    check_composition(targets, rendered)
    check_images_and_docs(root, targets, rendered)
    print(f"operations: {R.passed} passed, {R.failed} failed, {R.warnings} warnings")
    return 1 if R.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
