#!/usr/bin/env python3
"""Pins the agent image: the tag in base/ and the tag and digest in overlays/production.

Usage: pin_agent_image.py TAG DIGEST [MANIFESTS_DIR]
  e.g. pin_agent_image.py 4.85.0 "$(docker buildx imagetools inspect \\
           signalsciences/sigsci-agent:4.85.0 --format '{{.Manifest.Digest}}')"

Whatever tag and digest are there now (the all-zero placeholder, or the previous release's)
are replaced, so running it for every upgrade, or twice in a row, leaves exactly the values
given; nothing else in the files changes. The `images:` entry is kustomize's own (newTag,
digest), so `kubectl kustomize` is all that reads it. scripts/validate-manifests.sh runs it
twice on a copy of manifests/ and checks the rendered image each time.
"""

import os
import re
import sys

IMAGE = "signalsciences/sigsci-agent"


def set_entry(path, fields):
    """Sets `fields` (key -> value) in the `- name: IMAGE` entry of path's `images:` list."""
    lines = open(path).read().split("\n")
    start = next((i for i, l in enumerate(lines) if re.fullmatch(rf"\s*- name: {re.escape(IMAGE)}\s*", l)), None)
    if start is None:
        sys.exit(f"{path}: no images entry '- name: {IMAGE}'")
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    end = start + 1
    while end < len(lines) and lines[end].strip() and not lines[end].lstrip().startswith("#") \
            and len(lines[end]) - len(lines[end].lstrip()) >= indent:
        end += 1
    entry = lines[start + 1:end]
    for key, value in fields.items():
        line = f"{' ' * indent}{key}: {value}"
        at = [i for i, l in enumerate(entry) if re.match(rf"\s*{key}:", l)]
        if at:
            entry[at[0]] = line
        else:
            entry.append(line)
    lines[start + 1:end] = entry
    open(path, "w").write("\n".join(lines))


def main(argv):
    if len(argv) not in (3, 4):
        sys.exit(__doc__)
    tag, digest = argv[1], argv[2]
    manifests = argv[3] if len(argv) == 4 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "manifests")
    if not re.fullmatch(r"\d+\.\d+\.\d+", tag):
        sys.exit(f"tag {tag!r}: expected the agent's version, such as 4.85.0")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        sys.exit(f"digest {digest!r}: expected sha256: and 64 hex digits")
    set_entry(os.path.join(manifests, "base", "kustomization.yaml"), {"newTag": f'"{tag}"'})
    set_entry(os.path.join(manifests, "overlays", "production", "kustomization.yaml"),
              {"newTag": f'"{tag}"', "digest": digest})
    print(f"{IMAGE}:{tag}@{digest} pinned in {os.path.normpath(manifests)}/{{base,overlays/production}}/kustomization.yaml")


if __name__ == "__main__":
    main(sys.argv)
