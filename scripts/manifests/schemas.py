#!/usr/bin/env python3
"""Validate every rendered object against Kubernetes' own schemas (kubernetes-validate, strict).

Usage: schemas.py RENDERED_DIR VERSION...

Built-in kinds are validated strictly (unknown fields rejected) for every VERSION; a built-in
kind with no schema is a failure, never a skip. Custom resources (the CRDs below) have no
schema in kubernetes-validate: they are checked here for apiVersion, kind and the fields
their controllers require, and listed as such in the output.
"""

import os
import sys

import kubernetes_validate
import yaml
from kubernetes_validate import utils

# apiVersion/kind -> (required paths, list-valued paths that must be non-empty, and for
# each element of those lists, the keys it needs). Taken from the CRDs' own required fields.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): {
        "required": [("spec", "scaleTargetRef", "name"), ("spec", "triggers")],
        "items": {("spec", "triggers"): ["type", "metadata"]},
        "why": "KEDA CRD (keda.sh): no schema in kubernetes-validate",
    },
    ("cilium.io/v2", "CiliumNetworkPolicy"): {
        "required": [("spec", "endpointSelector"), ("spec", "egress")],
        "items": {},
        "why": "Cilium CRD (cilium.io): no schema in kubernetes-validate",
    },
    ("monitoring.coreos.com/v1", "PodMonitor"): {
        "required": [("spec", "selector"), ("spec", "podMetricsEndpoints")],
        "items": {("spec", "podMetricsEndpoints"): ["port"]},
        "why": "prometheus-operator CRD: no schema in kubernetes-validate",
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "required": [("spec", "groups")],
        "items": {("spec", "groups"): ["name", "rules"]},
        "why": "prometheus-operator CRD: no schema in kubernetes-validate (rules: promtool)",
    },
}


def dig(obj, path):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def check_crd(doc, spec):
    problems = []
    if not dig(doc, ("metadata", "name")):
        problems.append("metadata.name missing")
    for path in spec["required"]:
        if dig(doc, path) in (None, "", [], {}):
            problems.append(".".join(path) + " missing or empty")
    for path, keys in spec["items"].items():
        items = dig(doc, path)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            for key in keys:
                if not isinstance(item, dict) or key not in item:
                    problems.append(f"{'.'.join(path)}[{i}].{key} missing")
    return problems


def main(argv):
    rendered, versions = argv[1], argv[2:]
    available = utils.all_versions()
    for v in versions:
        if v not in available:
            print(f"FAIL: kubernetes-validate {kubernetes_validate.__name__} ships no schema for {v}"
                  f" (it has {', '.join(available)})")
            return 1
    passed = failed = crd = 0
    for name in sorted(os.listdir(rendered)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(rendered, name)) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        target = name[:-5]
        for doc in docs:
            ident = f"{target}: {doc.get('kind')}/{dig(doc, ('metadata', 'name'))}"
            spec = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
            if spec:
                problems = check_crd(doc, spec)
                crd += 1
                if problems:
                    failed += 1
                    print(f"FAIL {ident} (custom resource): {'; '.join(problems)}")
                else:
                    passed += 1
                    print(f"ok   {ident}: custom resource, required fields checked ({spec['why']})")
                continue
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                    passed += 1
                except utils.SchemaNotFoundError as e:
                    failed += 1
                    print(f"FAIL {ident} @{version}: {e.message}")
                except utils.ValidationError as e:
                    failed += 1
                    where = "/".join(str(p) for p in e.path)
                    print(f"FAIL {ident} @{version}: {e.message} (at {where})")
    print(f"schemas ({', '.join(versions)}, strict; {crd} custom resources by required fields): "
          f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
