"""What scripts/check-docs uses to check values the docs state, not only names.

A default a doc gives for a flag goes stale unseen when the code's default changes (a doc said
`--max-frame-bytes` was 1 MiB long after it became 4 MiB), and so does a manifest value quoted
in prose. Here a stated default is compared with the `[default: ...]` of the binaries' `--help`,
and an inline `key: value` with the values the rendered manifests hold.
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

# `--flag` ... default X  /  `--flag` (default X)  /  `--flag`, default X
STATED_DEFAULT = re.compile(
    r"`(--[a-z0-9][a-z0-9-]*)`,?\s*\(?\s*default:?\s+(?:is\s+)?(`[^`]+`|[0-9][0-9,.]*\s*[A-Za-zµ%/]*)")
# `--flag` (4 MiB...)  — a parenthesis that opens with a quantity
BARE_DEFAULT = re.compile(r"`(--[a-z0-9][a-z0-9-]*)`\s+\(([0-9][0-9,.]*(?:\s*[A-Za-zµ%/]+)?)[\s:;,)]")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
PAIR = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*):\s+(\S.*)$")
UNITS = {
    "": 1, "b": 1, "byte": 1, "bytes": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
    "kb": 1e3, "mb": 1e6, "gb": 1e9, "%": 0.01,
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
    "tx/s": 1, "/s": 1, "rpc/s": 1,
}
# Docs whose values are history, not today's truth.
HISTORY = {"CHANGELOG.md"}
# Inline `key: value` spans that quote other setups on purpose (doc, span).
NOT_OURS = {
    ("manifests/README.md", "maxSurge: 0, maxUnavailable: 1"),  # the rollout it warns against
    ("manifests/README.md", "hostNetwork: true"),  # the users' own pods
    ("manifests/README.md", "ipFamilyPolicy: PreferDualStack"),  # the dual-stack variant to set
    ("manifests/README.md", "digest: sha256:..."),  # the user's own pin
    ("docs/drain.md", "terminating: true"),  # EndpointSlice conditions, not manifests
    ("docs/drain.md", "serving: true"),
    ("docs/autoscaling.md", "AverageValue: 1"),  # the HPA's target as prose
    ("loadtest/README.md", "gracePeriodSeconds: 0"),  # a delete option
}
# The manifests rendered for the value check: every overlay, and every component on production.
COMPONENT_BASE = {"node-local-socket": "node-local", "kube-prometheus-stack": "monitoring"}


def quantity(text):
    """A stated value as a number (4 MiB = 4194304, 1s = 1, 20 % = 0.2), or None."""
    text = text.strip().strip("`").strip()
    if text.startswith("0") and len(text) > 1 and text.isdigit():
        return None  # an octal mode: compared as text
    text = text.split(", ")[0]  # "1000, or the scenario's"
    m = re.match(r"^([0-9][0-9,]*(?:\.[0-9]+)?)\s*([A-Za-zµ%/]*)", text)
    if not m:
        return None
    # A word that is no unit counts what the number counts ("16 workers", "0.2 retries").
    return float(m.group(1).replace(",", "")) * UNITS.get(m.group(2).lower(), 1)


def same(stated, default):
    a, b = quantity(stated), quantity(default)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1)
    return stated.strip().strip("`").strip() == default.strip().strip("`").strip()


def help_defaults(helps):
    """Flag -> every default a `--help` shows for it (a loadtest flag can differ by subcommand)."""
    found = {}
    for text in helps:
        for block in re.split(r"\n(?=\s+(?:-\w,\s+)?--)", text):
            m = re.match(r"\s+(?:-\w,\s+)?(--[a-z0-9][a-z0-9-]*)", block)
            d = re.search(r"\[default: ([^\]]+)\]", block)
            if m and d:
                found.setdefault(m.group(1), set()).add(d.group(1).strip())
        # Defaults a help gives in its prose, for a mode: "(`--concurrency`, default 16)",
        # "Defaults here: `--agents 1 --rate 2000`".
        for m in STATED_DEFAULT.finditer(text):
            found.setdefault(m.group(1), set()).add(m.group(2).strip())
        for m in re.finditer(r"[Dd]efaults? [^:`\n]*:\s*`([^`]+)`", text):
            for flag, value in re.findall(r"(--[a-z0-9-]+)\s+([^\s-][^\s]*)", m.group(1)):
                found.setdefault(flag, set()).add(value)
    return found


def render_manifests(root):
    """The text of every overlay and of each component on top of production, rendered."""
    if subprocess.run(["sh", "-c", "command -v kubectl"], capture_output=True).returncode != 0:
        sys.exit("check-docs: kubectl not found: it renders the manifests whose values the docs state")
    manifests = os.path.join(os.path.abspath(root), "manifests")
    texts = []
    targets = [os.path.join(manifests, "base")] + sorted(glob.glob(os.path.join(manifests, "overlays", "*")))
    for t in targets:
        texts.append(kubectl_kustomize(t))
    for comp in sorted(glob.glob(os.path.join(manifests, "components", "*"))):
        name = os.path.basename(comp)
        with tempfile.TemporaryDirectory() as d:
            m = os.path.relpath(manifests, d)  # kustomize wants relative paths
            with open(os.path.join(d, "kustomization.yaml"), "w") as f:
                f.write(f"resources: [{m}/overlays/{COMPONENT_BASE.get(name, 'production')}]\n"
                        f"components: [{m}/components/{name}]\n")
            texts.append(kubectl_kustomize(d))
    return "\n".join(texts)


def kubectl_kustomize(path):
    out = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"check-docs: kubectl kustomize {path} failed: {out.stderr}")
    return out.stdout


def manifest_values(text):
    """key -> set of the scalar values it has anywhere (block and flow style)."""
    values = {}
    for m in re.finditer(r"(?:^|[{,\s-])([a-zA-Z][a-zA-Z0-9]*):[ \t]+([^\s,{}\[\]#][^,{}\n#]*?)\s*(?=$|[,}]|\s#)", text, re.M):
        values.setdefault(m.group(1), set()).add(m.group(2).strip().strip("\"'"))
    return values


class Values:
    def __init__(self, root, helps):
        self.defaults = help_defaults(helps)
        self.manifest = manifest_values(render_manifests(root))

    def check_line(self, doc, line, following):
        """(kind, problem or None) for each default and manifest value the line states."""
        results = []
        if doc in HISTORY:
            return results
        text = line + " " + following.strip()
        seen = set()
        for pattern in (STATED_DEFAULT, BARE_DEFAULT):
            for m in pattern.finditer(text):
                if m.start() >= len(line) or m.group(1) in seen or m.group(1) not in self.defaults:
                    continue
                seen.add(m.group(1))
                flag, stated = m.group(1), m.group(2).strip().rstrip(".,;")
                known = self.defaults[flag]
                if pattern is BARE_DEFAULT and quantity(stated) is None:
                    continue
                ok = any(same(stated, d) for d in known)
                results.append(("defaults", None if ok else
                                f"`{flag}` default stated as {stated!r}; --help says {' or '.join(sorted(known))}"))
        for span in INLINE.findall(line):
            pairs = [PAIR.match(p.strip()) for p in span.split(",")]
            if not pairs or not all(pairs) or (doc, span.strip()) in NOT_OURS:
                continue
            for p in pairs:
                key, value = p.group(1), p.group(2).strip().strip("\"'")
                if key not in self.manifest:
                    continue
                ok = value in self.manifest[key]
                results.append(("values", None if ok else
                                f"`{key}: {value}`: the rendered manifests have {key}: "
                                f"{', '.join(sorted(self.manifest[key])[:6])}"))
        return results
