#!/usr/bin/env python3
"""Strict schema validation of CRD kinds against their upstream API types.

Usage: validate_crds.py --kserve-wheel WHEEL --k8s-schemas DIR [--expect-invalid] FILE...

KServe's ServingRuntime (serving.kserve.io/v1alpha1) and InferenceService (v1beta1) are checked
against the models KServe generates from its Go API types (the types its CRDs'
openAPIV3Schema comes from), read from the pinned SDK wheel (tests/deploy/crd-requirements.txt)
without importing it: each model file's `openapi_types` (field -> type), `attribute_map` (field
-> JSON key) and its "must not be `None`" checks (required fields). Core Kubernetes types inside
them (V1Container, V1Toleration, ...) are checked against kubernetes-validate's strict JSON
schemas (DIR: kubernetes-json-schema/v<version>-local-strict).

As `kubectl apply --validate=strict` does, an unknown field is an error (a typo, or a field put
in the wrong place, is otherwise pruned without a word). Other kinds are skipped and counted.

Prints one line per object and 'crd-schemas: N valid, N invalid, N skipped'. Exit status 1 when
an object is invalid, or, with --expect-invalid, when one is valid (the negative cases).
"""
import argparse
import ast
import json
import os
import re
import sys
import zipfile

import jsonschema
import yaml

KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class KServeModels:
    def __init__(self, wheel):
        self.zip = zipfile.ZipFile(wheel)
        self.cache = {}

    def model(self, name):
        """(types, attribute_map, required JSON keys) of a kserve model, or None."""
        if name in self.cache:
            return self.cache[name]
        path = f"kserve/models/{snake(name)}.py"
        try:
            src = self.zip.read(path).decode()
        except KeyError:
            self.cache[name] = None
            return None
        types, amap = {}, {}
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                t = getattr(node.targets[0], "id", None)
                if t == "openapi_types":
                    types = ast.literal_eval(node.value)
                elif t == "attribute_map":
                    amap = ast.literal_eval(node.value)
        required = {amap[a] for a in REQUIRED.findall(src) if a in amap}
        self.cache[name] = (types, amap, required)
        return self.cache[name]


class K8sSchemas:
    def __init__(self, directory):
        with open(os.path.join(directory, "_definitions.json")) as f:
            self.defs = json.load(f)["$defs"]
        self.cache = {}

    def validator(self, name):
        """A validator for a core type such as V1Container, or None if unknown."""
        if name in self.cache:
            return self.cache[name]
        m = re.fullmatch(r"V1(\w+)", name)
        keys = [k for k in self.defs if m and k.endswith(f".v1.{m.group(1)}")]
        # Core types first (V1Container), then apimachinery's (V1ObjectMeta).
        keys.sort(key=lambda k: (not k.startswith("io.k8s.api.core."), k))
        v = None
        if keys:
            schema = {"$ref": f"#/$defs/{keys[0]}", "$defs": self.defs}
            v = jsonschema.Draft202012Validator(schema)
        self.cache[name] = v
        return v


def check(value, typ, path, ks, k8s, errors):
    """Appends 'path: problem' strings to errors."""
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", typ)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            check(v, m.group(1), f"{path}[{i}]", ks, k8s, errors)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", typ)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for k, v in value.items():
            check(v, m.group(1), f"{path}.{k}", ks, k8s, errors)
        return
    simple = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "datetime": (str,)}
    if typ in simple:
        ok = isinstance(value, simple[typ]) and not (typ in ("int", "float") and isinstance(value, bool))
        if not ok:
            errors.append(f"{path}: expected {typ}, got {value!r}")
        return
    if typ == "object":
        return
    model = ks.model(typ)
    if model is not None:
        types, amap, required = model
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object ({typ}), got {type(value).__name__}")
            return
        by_key = {amap[a]: types[a] for a in types}
        for k in value:
            if k not in by_key:
                errors.append(f"{path}.{k}: unknown field (not in {typ})")
        for k in sorted(required - set(value)):
            errors.append(f"{path}.{k}: required field missing ({typ})")
        for k, v in value.items():
            if k in by_key:
                check(v, by_key[k], f"{path}.{k}", ks, k8s, errors)
        return
    v = k8s.validator(typ)
    if v is None:
        errors.append(f"{path}: no schema for type {typ} (validator incomplete)")
        return
    for e in sorted(v.iter_errors(value), key=lambda e: list(e.path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path)
        errors.append(f"{path}{where}: {e.message}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kserve-wheel", required=True)
    ap.add_argument("--k8s-schemas", required=True)
    ap.add_argument("--expect-invalid", action="store_true")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    ks, k8s = KServeModels(args.kserve_wheel), K8sSchemas(args.k8s_schemas)
    valid = invalid = skipped = 0
    for fn in args.files:
        with open(fn) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            name = f"{os.path.basename(fn)}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            if key not in KINDS:
                skipped += 1
                continue
            errors = []
            check(d, KINDS[key], d["kind"], ks, k8s, errors)
            if errors:
                invalid += 1
                print(f"{'ok  ' if args.expect_invalid else 'FAIL'} {name} rejected")
                for e in errors[:20]:
                    print(f"       {e}")
            else:
                valid += 1
                print(f"{'FAIL' if args.expect_invalid else 'ok  '} {name} valid")
    print(f"crd-schemas: {valid} valid, {invalid} invalid, {skipped} skipped")
    if args.expect_invalid:
        sys.exit(1 if valid or not invalid else 0)
    sys.exit(1 if invalid or not valid else 0)


if __name__ == "__main__":
    main()
