#!/usr/bin/env python3
"""Your site's overlay: your registry and image tags, outside every tracked file.

Usage: python3 scripts/manifests/site_overlay.py SITE_DIR --tag TAG [--registry REGISTRY]
                                                 [--base overlays/production]
                                                 [--agent AGENT_TAG@sha256:DIGEST]

SITE_DIR (best outside this checkout, e.g. ../sigsci-site, so `git pull` never meets it) gets:

- kustomization.yaml, written only when missing: the chosen overlay of this checkout plus the
  component images/. It is yours: add components and patches; later runs leave it alone;
- images/kustomization.yaml, a kustomize Component rewritten on every run: the `images:` of
  sigsci-proxy, sigsci-loadtest and sigsci-example-app, each at REGISTRY/NAME:TAG (no
  REGISTRY: the local name, for kind or minikube), and the agent image's tag and digest
  when --agent gives them (a later run without --agent keeps the pin it finds there).

Run it again with the next release's tag (scripts/image-tag) and `kubectl apply -k SITE_DIR`:
the pod templates change, so the Deployment rolls, and a second run with another registry or
tag replaces the first (checked twice in a row by scripts/validate-manifests.sh).
"""

import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGES = ("sigsci-proxy", "sigsci-loadtest", "sigsci-example-app")
AGENT = "signalsciences/sigsci-agent"
AGENT_PIN = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})@(sha256:[0-9a-f]{64})$")
NAME = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def images_component(registry, tag, agent):
    lines = ["# Written by scripts/manifests/site_overlay.py on every run: do not edit, run it again.",
             "apiVersion: kustomize.config.k8s.io/v1alpha1", "kind: Component", "images:"]
    for name in IMAGES:
        lines.append(f"  - name: {name}")
        if registry:
            lines.append(f"    newName: {registry}/{name}")
        lines.append(f'    newTag: "{tag}"')
    if agent:
        agent_tag, digest = agent
        lines += [f"  - name: {AGENT}", f'    newTag: "{agent_tag}"', f"    digest: {digest}"]
    return "\n".join(lines) + "\n"


def current_agent_pin(path):
    """(tag, digest) of the agent entry an earlier run wrote, if any."""
    if not os.path.exists(path):
        return None
    m = re.search(rf'- name: {re.escape(AGENT)}\n\s+newTag: "([^"]+)"\n\s+digest: (\S+)', open(path).read())
    return (m.group(1), m.group(2)) if m else None


def site_kustomization(site, base):
    rel = os.path.relpath(os.path.join(ROOT, "manifests", base), os.path.abspath(site))
    return (f"# Your site's overlay (scripts/manifests/site_overlay.py wrote it once; it is yours).\n"
            f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {rel}\ncomponents:\n  - images\n")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("site")
    p.add_argument("--tag", required=True)
    p.add_argument("--registry", default="")
    p.add_argument("--base", default="overlays/production")
    p.add_argument("--agent", default=None, help="the agent image's TAG@sha256:DIGEST")
    a = p.parse_args(argv[1:])
    registry = a.registry.rstrip("/")
    if registry and not NAME.match(registry):
        sys.exit(f"site_overlay: {registry!r} is not a registry path (host[:port]/path)")
    if not TAG.match(a.tag):
        sys.exit(f"site_overlay: {a.tag!r} is not an image tag")
    if not os.path.isfile(os.path.join(ROOT, "manifests", a.base, "kustomization.yaml")):
        sys.exit(f"site_overlay: manifests/{a.base} is no overlay of this checkout")
    component = os.path.join(a.site, "images", "kustomization.yaml")
    agent = current_agent_pin(component)
    if a.agent is not None:
        m = AGENT_PIN.match(a.agent)
        if not m:
            sys.exit(f"site_overlay: --agent {a.agent!r} is not TAG@sha256:<64 hex digits>")
        agent = (m.group(1), m.group(2))
    os.makedirs(os.path.dirname(component), exist_ok=True)
    with open(component, "w") as f:
        f.write(images_component(registry, a.tag, agent))
    own = os.path.join(a.site, "kustomization.yaml")
    if not os.path.exists(own):
        with open(own, "w") as f:
            f.write(site_kustomization(a.site, a.base))
        print(f"site_overlay: wrote {own} (yours from now on) and {a.site}/images/")
    else:
        print(f"site_overlay: images set to {registry + '/' if registry else ''}NAME:{a.tag} in {a.site}/images/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
