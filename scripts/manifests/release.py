#!/usr/bin/env python3
"""Releases that upgrade (run by scripts/validate-manifests.sh).

Usage: scripts/manifests/release.py OUT_DIR

1. One version source: the workspace's `version` (Cargo.toml) is the tag every tracked
   manifest gives this repository's images, the Dockerfiles' default VERSION, and the newest
   release section of CHANGELOG.md, which has upgrade notes; scripts/image-tag prints it on a
   release and `<version>-git.<commit>` otherwise.
2. The upgrade path, twice in a row, as manifests/README.md tells it: a site overlay written by
   scripts/manifests/site_overlay.py with one registry and tag renders those images; a second
   run with another registry and tag renders the new ones only (and keeps the first run's agent
   tag and digest), and the proxy's pod template
   changes (so `kubectl apply` rolls it); the site's own kustomization.yaml is left as it was;
   no tracked file changes.
"""

import glob
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OURS = ("sigsci-proxy", "sigsci-loadtest", "sigsci-example-app")


def workspace_version():
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    section = text.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


def versions(problems):
    v = workspace_version()
    for path in glob.glob(os.path.join(ROOT, "manifests", "**", "kustomization.yaml"), recursive=True):
        text = open(path).read()
        for name, tag in re.findall(r"- name: (sigsci-[a-z-]+)\n(?:\s+newName: \S+\n)?\s+newTag: \"?([^\"\n]+)\"?", text):
            if name in OURS and tag != v:
                problems.append(f"{os.path.relpath(path, ROOT)}: {name} tagged {tag}, the workspace is {v}")
    for path in glob.glob(os.path.join(ROOT, "docker", "*.Dockerfile")):
        for default in re.findall(r"^ARG VERSION=(\S+)", open(path).read(), re.M):
            if default != v:
                problems.append(f"{os.path.relpath(path, ROOT)}: ARG VERSION={default}, the workspace is {v}")
    changelog = open(os.path.join(ROOT, "CHANGELOG.md")).read()
    releases = re.findall(r"^## (\d+\.\d+\.\d+)\b", changelog, re.M)
    if not releases or releases[0] != v:
        problems.append(f"CHANGELOG.md: newest release section is {releases[:1]}, the workspace is {v}")
    else:
        section = changelog.split(f"## {v}", 1)[1].split("\n## ", 1)[0]
        if "### Upgrade notes" not in section:
            problems.append(f"CHANGELOG.md: the {v} section has no '### Upgrade notes'")
    tag = subprocess.run([os.path.join(ROOT, "scripts", "image-tag")], capture_output=True, text=True).stdout.strip()
    if not (tag == v or tag.startswith(f"{v}-git.") or tag == f"{v}-unknown"):
        problems.append(f"scripts/image-tag printed {tag!r}, not {v} or {v}-git.<commit>")
    return v


def render(site):
    out = subprocess.run(["kubectl", "kustomize", site], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        sys.exit(f"release: kubectl kustomize {site} failed: {out.stderr}")
    return out.stdout


def proxy_template(rendered):
    doc = next(d for d in rendered.split("\n---\n") if re.search(r"^kind: Deployment\n(?:.*\n)*?  name: sigsci-proxy\n", d, re.M))
    return doc.split("  template:", 1)[1]


def upgrade_twice(out, problems):
    site = os.path.join(out, "site")
    subprocess.run(["rm", "-rf", site], check=True)
    tracked = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "manifests"],
                             capture_output=True, text=True).stdout
    previous = None
    agent = "4.99.0@sha256:" + "3" * 64
    for n, (registry, tag) in enumerate([("registry-a.example/platform", "0.0.1-git.aaaaaaaaaaaa"),
                                         ("registry-b.example/team", "0.0.2-git.bbbbbbbbbbbb")], 1):
        pin = ["--agent", agent] if n == 1 else []  # the second run keeps the first's pin
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "manifests", "site_overlay.py"),
                        site, "--registry", registry, "--tag", tag, *pin], check=True, capture_output=True)
        if n == 1:
            with open(os.path.join(site, "kustomization.yaml"), "a") as f:
                f.write("# the site's own line\n")
        rendered = render(site)
        images = set(re.findall(r"image: (\S+)", rendered))
        want = f"{registry}/sigsci-proxy:{tag}"
        if want not in images:
            problems.append(f"upgrade run {n}: {want} not rendered ({sorted(images)})")
        if f"signalsciences/sigsci-agent:{agent}" not in images:
            problems.append(f"upgrade run {n}: the site's agent pin {agent} not rendered ({sorted(images)})")
        stale = [i for i in images if i.split("/")[-1].startswith(OURS) and i != want]
        if stale:
            problems.append(f"upgrade run {n}: other images of ours rendered: {stale}")
        template = proxy_template(rendered)
        if previous is not None and template == previous:
            problems.append("upgrade run 2: the proxy's pod template did not change: apply would roll nothing")
        previous = template
        print(f"upgrade run {n}: {want}")
    if "# the site's own line" not in open(os.path.join(site, "kustomization.yaml")).read():
        problems.append("the second run rewrote the site's own kustomization.yaml")
    after = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "manifests"],
                           capture_output=True, text=True).stdout
    if after != tracked:
        problems.append(f"the upgrade path changed tracked files: {after}")


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__)
    problems = []
    v = versions(problems)
    print(f"version {v}: manifests, Dockerfiles, CHANGELOG and scripts/image-tag checked")
    upgrade_twice(argv[1], problems)
    for p in problems:
        print(f"FAILED {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
