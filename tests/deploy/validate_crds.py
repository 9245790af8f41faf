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
an object is invalid, or, with --expect-invalid, when one is valid (the negative cases) or is
rejected without the error its annotation validate-crds.test/expect-error names.

KEDA (keda.sh) and Prometheus Operator (monitoring.coreos.com) kinds are checked against
cloudcoil's models of the upstream CRDs (--cloudcoil-wheel, see CloudcoilModels); a kind of those
groups with no model is an error, not a skip.
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
# On a negative case: the error it must be rejected with (a substring of one error line).
EXPECT = "validate-crds.test/expect-error"
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


class CloudcoilModels:
    """KEDA and Prometheus Operator kinds, from cloudcoil's model wheels (pinned in
    crd-requirements.txt), which cloudcoil-model-codegen generates from the upstream CRDs'
    openAPIV3Schema: one pydantic class per schema object, read with `ast` (never imported: the
    wheels need Python 3.14). A field is `name: T` or `name: Annotated[T, Field(alias=..., ge=...,
    le=..., min_length=..., pattern=...)]`, required when it has no default; `T | U` is oneOf,
    `RootModel[T]` a scalar schema, and `model_config = ConfigDict(extra='allow')` marks
    x-kubernetes-preserve-unknown-fields. Any other object rejects unknown fields."""

    GROUPS = {"keda.sh": "keda", "eventing.keda.sh": "keda/eventing",
              "monitoring.coreos.com": "prometheus_operator"}

    def __init__(self, wheels):
        self.zips = [zipfile.ZipFile(w) for w in wheels]
        self.modules = {}

    def module(self, api_version):
        group, _, version = api_version.partition("/")
        if group not in self.GROUPS:
            return None
        path = f"cloudcoil/models/{self.GROUPS[group]}/{version}.py"
        if path not in self.modules:
            self.modules[path] = None
            for z in self.zips:
                if path in z.namelist():
                    tree = ast.parse(z.read(path).decode())
                    self.modules[path] = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        return self.modules[path]

    def resource(self, api_version, kind):
        """The module's classes and the ast node of kind's class, or None."""
        mod = self.module(api_version)
        if mod is None or kind not in mod:
            return None
        if not any(ast.unparse(b) == "Resource" for b in mod[kind].bases):
            return None
        return mod, mod[kind]

    def check(self, value, node, path, mod, k8s, errors):
        if value is None and isinstance(node, ast.Constant) and node.value is None:
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            alts = []
            def flat(n):
                if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
                    flat(n.left); flat(n.right)
                else:
                    alts.append(n)
            flat(node)
            if value is None and any(isinstance(a, ast.Constant) and a.value is None for a in alts):
                return
            alts = [a for a in alts if not (isinstance(a, ast.Constant) and a.value is None)]
            if len(alts) == 1:
                return self.check(value, alts[0], path, mod, k8s, errors)
            tried = []
            for a in alts:
                e = []
                self.check(value, a, path, mod, k8s, e)
                if not e:
                    return
                tried.append(e)
            errors.append(f"{path}: {value!r} matches none of {ast.unparse(node)} ({tried[0][0]})")
            return
        if isinstance(node, ast.Subscript):
            head, arg = ast.unparse(node.value), node.slice
            args = list(arg.elts) if isinstance(arg, ast.Tuple) else [arg]
            if head == "Annotated":
                for call in args[1:]:
                    for kw in getattr(call, "keywords", []):
                        c = ast.literal_eval(kw.value) if kw.arg != "alias" else None
                        if value is None:
                            continue
                        if kw.arg == "ge" and isinstance(value, (int, float)) and value < c:
                            errors.append(f"{path}: {value!r} is less than the minimum {c}")
                        elif kw.arg == "le" and isinstance(value, (int, float)) and value > c:
                            errors.append(f"{path}: {value!r} is more than the maximum {c}")
                        elif kw.arg == "min_length" and isinstance(value, (list, str, dict)) and len(value) < c:
                            errors.append(f"{path}: shorter than the minimum length {c}")
                        elif kw.arg == "pattern" and isinstance(value, str) and not re.search(c, value):
                            errors.append(f"{path}: {value!r} does not match {c!r}")
                return self.check(value, args[0], path, mod, k8s, errors)
            if head == "Literal":
                allowed = [a.value for a in args]
                if value not in allowed or isinstance(value, bool) != any(isinstance(a, bool) for a in allowed):
                    errors.append(f"{path}: {value!r} is not one of {allowed}")
                return
            if head == "list":
                if not isinstance(value, list):
                    errors.append(f"{path}: expected a list, got {type(value).__name__}")
                    return
                for i, v in enumerate(value):
                    self.check(v, args[0], f"{path}[{i}]", mod, k8s, errors)
                return
            if head == "dict":
                if not isinstance(value, dict):
                    errors.append(f"{path}: expected a map, got {type(value).__name__}")
                    return
                for k, v in value.items():
                    self.check(v, args[1], f"{path}.{k}", mod, k8s, errors)
                return
            errors.append(f"{path}: unsupported type {ast.unparse(node)} (validator incomplete)")
            return
        name = ast.unparse(node)
        simple = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "AwareDatetime": (str,)}
        if name in simple:
            if not isinstance(value, simple[name]) or (name in ("int", "float") and isinstance(value, bool)):
                errors.append(f"{path}: expected {name}, got {value!r}")
            return
        if name == "Any":
            return
        if name == "ObjectMeta":
            v = k8s.validator("V1ObjectMeta")
            for e in sorted(v.iter_errors(value), key=lambda e: list(e.path)):
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path)
                errors.append(f"{path}{where}: {e.message}")
            return
        cls = mod.get(name)
        if cls is None:
            errors.append(f"{path}: no model for type {name} (validator incomplete)")
            return
        base = ast.unparse(cls.bases[0])
        fields, extra = {}, False
        for b in cls.body:
            if isinstance(b, ast.AnnAssign) and isinstance(b.target, ast.Name):
                ann = b.annotation
                if ast.unparse(ann).startswith("ClassVar"):
                    continue
                key = b.target.id
                if isinstance(ann, ast.Subscript) and ast.unparse(ann.value) == "Annotated":
                    for call in (ann.slice.elts[1:] if isinstance(ann.slice, ast.Tuple) else []):
                        for kw in getattr(call, "keywords", []):
                            if kw.arg == "alias":
                                key = kw.value.value
                fields[key] = (ann, b.value is None)
            elif isinstance(b, ast.Assign) and ast.unparse(b.targets[0]) == "model_config":
                extra = "extra='allow'" in ast.unparse(b.value)
        if base.startswith("RootModel"):
            root = fields.get("root", (cls.bases[0].slice, True))[0]
            return self.check(value, root, path, mod, k8s, errors)
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object ({name}), got {type(value).__name__}")
            return
        for k in value:
            if k not in fields and not extra:
                errors.append(f"{path}.{k}: unknown field (not in {name})")
        for k in sorted(k for k, (_, req) in fields.items() if req and k not in value):
            errors.append(f"{path}.{k}: required field missing ({name})")
        for k, v in value.items():
            if k in fields:
                self.check(v, fields[k][0], f"{path}.{k}", mod, k8s, errors)


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
    ap.add_argument("--cloudcoil-wheel", action="append", default=[],
                    help="a cloudcoil models wheel (KEDA, Prometheus Operator); repeatable")
    ap.add_argument("--k8s-schemas", required=True)
    ap.add_argument("--expect-invalid", action="store_true")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    ks, k8s = KServeModels(args.kserve_wheel), K8sSchemas(args.k8s_schemas)
    cc = CloudcoilModels(args.cloudcoil_wheel)
    valid = invalid = 0
    skipped, kinds = {}, {}
    for fn in args.files:
        with open(fn) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            name = f"{os.path.basename(fn)}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            errors = []
            group = str(key[0]).partition("/")[0]
            if key in KINDS:
                check(d, KINDS[key], d["kind"], ks, k8s, errors)
            elif group in CloudcoilModels.GROUPS:
                res = cc.resource(*key)
                if res is None:
                    errors.append(f"{key[0]} {key[1]}: no upstream model in the cloudcoil wheels given")
                else:
                    mod, cls = res
                    cc.check(d, ast.Name(cls.name), d["kind"], mod, k8s, errors)
            else:
                skipped[d.get("kind")] = skipped.get(d.get("kind"), 0) + 1
                continue
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
            expect = ((d.get("metadata") or {}).get("annotations") or {}).get(EXPECT)
            if args.expect_invalid and errors and expect and not any(expect in e for e in errors):
                valid += 1  # rejected, but not for the mistake it stands for
                print(f"FAIL {name} rejected without the expected error {expect!r}")
                for e in errors[:20]:
                    print(f"       {e}")
            elif errors:
                invalid += 1
                print(f"{'ok  ' if args.expect_invalid else 'FAIL'} {name} rejected")
                for e in errors[:20]:
                    print(f"       {e}")
            else:
                valid += 1
                print(f"{'FAIL' if args.expect_invalid else 'ok  '} {name} valid")
    print(f"crd-schemas: {valid} valid, {invalid} invalid "
          f"({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))}), "
          f"{sum(skipped.values())} skipped ({', '.join(sorted(skipped)) or 'none'})")
    if args.expect_invalid:
        sys.exit(1 if valid or not invalid else 0)
    sys.exit(1 if invalid or not valid else 0)


if __name__ == "__main__":
    main()
