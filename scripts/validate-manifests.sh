#!/usr/bin/env bash
# Validate the Kubernetes manifests (called by CI; safe to run again and again).
#
#   scripts/validate-manifests.sh
#
# 1. `kubectl kustomize` renders the base and every overlay, plus a copy of the simulated
#    overlay moved to another namespace (the namespace must stay overridable).
# 2. Every rendered built-in object is validated strictly against the Kubernetes 1.30 and 1.34
#    schemas (PyPI kubernetes-validate); custom resources (KEDA, prometheus-operator) by their
#    required fields (scripts/manifests/schemas.py says which).
# 3. checkov scans the rendered manifests and the Dockerfiles: no failed check allowed; skips
#    only inline, each with its reason.
# 4. scripts/manifests/consistency.py: RBAC = what the proxy's Kubernetes source uses; every
#    port, name and label the proxy's configuration uses matches the manifests and the code.
# 5. scripts/manifests/operations.py: what a cluster operator relies on: the agents'
#    startup probe (port 2024, /startup) apart from liveness and readiness, SIGSCI_MAX_PROCS =
#    the CPU limit, a full core requested and memory headroom, a supported agent version and a
#    pinned digest in production, PDBs that let drains evict unhealthy pods, the proxy's hard
#    host spread, zone spread and PriorityClass, the autoscalers on the raw demand summed and
#    rounded once, the optional NetworkPolicy components, the images (stripped, OCI labels,
#    Node LTS, multi-arch commands), the load-test Job in its own overlay, the LICENSE; and
#    composition: no autoscaled overlay sets the agents' replicas, every namespaced object names
#    its namespace, no per-site overlay carries the shared PriorityClass, [::] listeners and
#    ::/0 beside every 0.0.0.0/0, the node-local DaemonSet.
# 6. Digest pinning (scripts/manifests/pin_agent_image.py) run twice in a row on a copy of
#    manifests/: the second run's tag and digest are the ones rendered.
# 7. Releases (scripts/manifests/release.py): the workspace version is the images' tag in every
#    manifest, the Dockerfiles' default and the CHANGELOG's newest release (with upgrade notes);
#    the documented upgrade path (a site overlay by scripts/manifests/site_overlay.py, then the
#    next release's registry and tag) renders the new images, twice in a row, touching no
#    tracked file.
# 8. promtool: `check rules` on the rendered PrometheusRule and `test rules` with
#    scripts/manifests/prometheusrule-test.yaml (promtool comes from Debian's prometheus
#    package, installed here with apt when missing).
#
# Tools go into a virtualenv, .venv/manifests (created, and python3-venv installed with apt
# when missing, on first run; reused after). Output: reports/manifests/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv/manifests"
REQ="$ROOT/scripts/manifests/requirements.txt"
OUT="$ROOT/reports/manifests"
RENDERED="$OUT/rendered"
K8S_VERSIONS=(1.30.0 1.34.0)
TARGETS=(base cluster overlays/production overlays/simulated overlays/autoscaling overlays/autoscaling-keda
         overlays/monitoring overlays/autoscaling-monitoring overlays/autoscaling-keda-monitoring
         overlays/node-local overlays/example-app overlays/loadtest overlays/loadtest-cluster)
# Optional components rendered on top of an overlay: "name overlay component...".
COMPOSED=("busy-poll simulated busy-poll"
          "netpol-cilium production netpol-cilium"
          "netpol-apiserver-port production apiserver-port"
          "netpol-nodelocal-dns production nodelocal-dns"
          "netpol-microk8s simulated apiserver-port nodelocal-dns"
          "monitoring-component production monitoring"
          "kube-prometheus-stack production monitoring kube-prometheus-stack"
          "ipv4-only production ipv4-only"
          "ipv4-only-node-local node-local ipv4-only"
          "node-local-socket node-local node-local-socket")

declare -a TIMINGS=()
STEP_START=0
step() { STEP_START=$(date +%s.%N); echo; echo "== $*"; }
done_step() {
    local t; t=$(awk -v a="$STEP_START" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    TIMINGS+=("$(printf '%-34s %6ss' "$1" "$t")")
}
die() { echo "validate-manifests: $*" >&2; exit 1; }
TOTAL_START=$(date +%s.%N)

# --- kubectl ---------------------------------------------------------------------------
step "kubectl"
command -v kubectl >/dev/null 2>&1 \
    || die "kubectl not found on PATH: install it (Debian: apt-get install kubectl from the Kubernetes apt repository) — 'kubectl kustomize' renders the manifests"
kubectl version --client 2>/dev/null | head -2 || true
kubectl kustomize --help >/dev/null 2>&1 || die "this kubectl has no 'kustomize' subcommand (kubectl >= 1.14 needed)"
done_step "kubectl check"

# --- virtualenv ------------------------------------------------------------------------
step "python tools (.venv/manifests)"
command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-venv)"
if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$ROOT/.venv"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        rm -rf "$VENV"
        echo "python3 -m venv failed: installing python3-venv with apt"
        [ "$(id -u)" = 0 ] || die "python3-venv is missing and this is not root: apt-get install python3-venv"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
STAMP="$VENV/.requirements.sha256"
WANT=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "installing $(grep -v '^#' "$REQ" | tr '\n' ' ')"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
    echo "$WANT" > "$STAMP"
else
    echo "cached: $(grep -v '^#' "$REQ" | tr '\n' ' ')"
fi
done_step "venv (install or cache)"

# --- promtool --------------------------------------------------------------------------
step "promtool"
if ! command -v promtool >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || die "promtool not found and this is not root: apt-get install prometheus (or run scripts/setup as root)"
    echo "promtool not found: installing Debian's prometheus package with apt"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
promtool --version 2>&1 | head -1
done_step "promtool (install or cache)"

# --- render ----------------------------------------------------------------------------
step "kubectl kustomize"
rm -rf "$RENDERED" "$OUT/namespace-override" "$OUT/composed" "$OUT/busy-poll"
mkdir -p "$RENDERED"
for t in "${TARGETS[@]}"; do
    name=$(basename "$t")
    kubectl kustomize "$ROOT/manifests/$t" > "$RENDERED/$name.yaml" \
        || die "kubectl kustomize manifests/$t failed"
    echo "manifests/$t -> $(grep -c '^kind:' "$RENDERED/$name.yaml") objects"
done
# The namespace is overridable: the simulated system plus the HPA, moved to another namespace.
mkdir -p "$OUT/namespace-override"
cat > "$OUT/namespace-override/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: sigsci-moved
resources:
  - ../../../manifests/overlays/simulated
components:
  - ../../../manifests/components/hpa
patches:
  - target: {kind: Deployment, name: sigsci-agent}
    patch: |-
      - op: remove
        path: /spec/replicas
EOF
kubectl kustomize "$OUT/namespace-override" > "$RENDERED/namespace-override.yaml" \
    || die "kubectl kustomize of the namespace override failed"
echo "namespace override (sigsci-moved) -> $(grep -c '^kind:' "$RENDERED/namespace-override.yaml") objects"
# Components (busy polling, the NetworkPolicy variants) on top of an overlay.
for entry in "${COMPOSED[@]}"; do
    read -r name overlay components <<< "$entry"
    dir="$OUT/composed/$name"
    mkdir -p "$dir"
    {
        printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n'
        printf 'resources:\n  - ../../../../manifests/overlays/%s\ncomponents:\n' "$overlay"
        for c in $components; do printf '  - ../../../../manifests/components/%s\n' "$c"; done
    } > "$dir/kustomization.yaml"
    kubectl kustomize "$dir" > "$RENDERED/$name.yaml" \
        || die "kubectl kustomize of overlays/$overlay + components $components failed"
    echo "overlays/$overlay + components/{${components// /,}} -> $(grep -c '^kind:' "$RENDERED/$name.yaml") objects ($name)"
done
done_step "render ($(( ${#TARGETS[@]} + 1 + ${#COMPOSED[@]} )) targets)"

FAILED=0
PASSED=0
record() { if [ "$1" = 0 ]; then PASSED=$((PASSED + 1)); else FAILED=$((FAILED + 1)); fi; }

# --- schemas ---------------------------------------------------------------------------
step "schemas: Kubernetes ${K8S_VERSIONS[*]} (kubernetes-validate, strict)"
rc=0
"$VENV/bin/python" "$ROOT/scripts/manifests/schemas.py" "$RENDERED" "${K8S_VERSIONS[@]}" > "$OUT/schemas.txt" || rc=$?
grep -v '^ok ' "$OUT/schemas.txt" || true
record $rc
done_step "schemas (1.30 + 1.34)"

# --- checkov ---------------------------------------------------------------------------
step "checkov (rendered manifests + Dockerfiles)"
rc=0
# --skip-download: no calls to the vendor's platform (the machine may be offline).
"$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
    -d "$RENDERED" > "$OUT/checkov-kubernetes.txt" 2>&1 || rc=$?
grep -E 'Passed checks|FAILED|Check:' "$OUT/checkov-kubernetes.txt" || cat "$OUT/checkov-kubernetes.txt"
record $rc
rc=0
"$VENV/bin/checkov" --quiet --compact --skip-download --framework dockerfile \
    -d "$ROOT/docker" > "$OUT/checkov-dockerfile.txt" 2>&1 || rc=$?
grep -E 'Passed checks|FAILED|Check:' "$OUT/checkov-dockerfile.txt" || cat "$OUT/checkov-dockerfile.txt"
record $rc
done_step "checkov (kubernetes + dockerfile)"

# --- consistency -----------------------------------------------------------------------
step "consistency (RBAC, ports, names, labels vs proxy config and code)"
rc=0
"$VENV/bin/python" "$ROOT/scripts/manifests/consistency.py" "$ROOT" "$RENDERED" > "$OUT/consistency.txt" || rc=$?
grep -v '^ok ' "$OUT/consistency.txt" || true
record $rc
done_step "consistency"

# --- operations ------------------------------------------------------------------------
step "operations (probes, sizing, disruption, spread, autoscaling, policies, images)"
rc=0
"$VENV/bin/python" "$ROOT/scripts/manifests/operations.py" "$ROOT" "$RENDERED" > "$OUT/operations.txt" || rc=$?
grep -v '^ok ' "$OUT/operations.txt" || true
record $rc
done_step "operations"

# --- digest pinning --------------------------------------------------------------------
step "digest pinning twice in a row (scripts/manifests/pin_agent_image.py on a copy)"
rc=0
PIN="$OUT/pin"
rm -rf "$PIN"; mkdir -p "$PIN"; cp -r "$ROOT/manifests" "$PIN/manifests"
pin_check() {
    local tag=$1 digest=$2 t got
    "$VENV/bin/python" "$ROOT/scripts/manifests/pin_agent_image.py" "$tag" "$digest" "$PIN/manifests" || return 1
    for t in production autoscaling autoscaling-monitoring; do
        got=$(kubectl kustomize "$PIN/manifests/overlays/$t" | grep -o 'image: signalsciences/sigsci-agent[^ ]*' | sort -u)
        if [ "$got" != "image: signalsciences/sigsci-agent:$tag@$digest" ]; then
            echo "FAIL overlays/$t after pinning $tag@$digest renders: $got"; return 1
        fi
    done
    echo "ok pinned $tag@${digest:0:19}...: production, autoscaling, autoscaling-monitoring render it"
}
D1="sha256:$(printf '1%.0s' $(seq 64))"
D2="sha256:$(printf '2%.0s' $(seq 64))"
{ pin_check 4.84.0 "$D1" && pin_check 4.85.0 "$D2" \
    && cp -r "$PIN/manifests" "$PIN/once" && pin_check 4.85.0 "$D2" \
    && diff -r "$PIN/once" "$PIN/manifests" >/dev/null && echo "ok the same pin again changes no file"; } || rc=1
record $rc
done_step "digest pinning"

# --- releases ----------------------------------------------------------------------------
step "releases: one version source, the site overlay's upgrade path twice (scripts/manifests/release.py)"
rc=0
"$VENV/bin/python" "$ROOT/scripts/manifests/release.py" "$OUT" || rc=1
record $rc
done_step "releases"

# --- alert rules (promtool) ------------------------------------------------------------
# The PrometheusRule rendered with overlays/monitoring goes through `promtool check rules`.
# That every sigsci_proxy_* metric the rules and the dashboard use is exported is checked
# against a running proxy by `cargo test -p sigsci-proxy --test it metrics::`
# (the_alert_rules_and_the_dashboard_use_only_exported_metrics).
step "promtool check rules + test rules (manifests/components/monitoring, rendered)"
rc=0
RULES="$OUT/prometheusrule-rules.yaml"
"$VENV/bin/python" - "$RENDERED/monitoring.yaml" "$RULES" <<'PY' || rc=1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d.get("kind") == "PrometheusRule"]
if not rules:
    sys.exit("no PrometheusRule in the rendered monitoring overlay")
groups = [g for r in rules for g in r["spec"]["groups"]]
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False)
print(f"{len(rules)} PrometheusRule, {len(groups)} groups, "
      f"{sum(len(g['rules']) for g in groups)} rules -> {sys.argv[2]}")
PY
[ $rc = 0 ] && { promtool check rules "$RULES" || rc=1; }
"$VENV/bin/python" - "$RULES" <<'PY' || rc=1
import sys, yaml
want = {"summary", "description", "runbook_url"}
bad = [r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]
       if "alert" in r and not want <= set(r.get("annotations", {}))]
print("every alert has a summary, a description and a runbook_url" if not bad else f"FAIL missing annotations: {bad}")
sys.exit(1 if bad else 0)
PY
# Unit tests (scripts/manifests/prometheusrule-test.yaml): alerts fire on the series they are
# for and not below their thresholds; description and runbook_url are left out of the copy
# they test.
"$VENV/bin/python" - "$RULES" "$OUT/prometheusrule-rules-summary.yaml" <<'PY' || rc=1
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
for g in rules["groups"]:
    for r in g["rules"]:
        for k in ("description", "runbook_url"):
            r.get("annotations", {}).pop(k, None)
yaml.safe_dump(rules, open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$ROOT/scripts/manifests/prometheusrule-test.yaml" "$OUT/prometheusrule-test.yaml"
(cd "$OUT" && promtool test rules prometheusrule-test.yaml) || rc=1
record $rc
done_step "promtool"

echo
echo "== timings"
printf '  %s\n' "${TIMINGS[@]}"
awk -v a="$TOTAL_START" -v b="$(date +%s.%N)" 'BEGIN { printf "  %-34s %6.1fs\n", "total", b - a }'
echo "  details: reports/manifests/{schemas,checkov-*,consistency,operations,pin}*, prometheusrule-*"
echo
echo "validate-manifests: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
