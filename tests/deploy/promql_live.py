#!/usr/bin/env python3
"""Check 4 (draft): evaluate the extracted PromQL on a live Prometheus.

Usage:
  extract_promql.py --namespace NS > exprs.json
  promql_live.py --prometheus http://127.0.0.1:9090 --exprs exprs.json --phase load|idle \
                 [--have gpu,drain]

The Prometheus must scrape a real Triton and the agent, with `namespace` and `pod` target labels
added by relabeling the way the ServiceMonitor does (pod names must match the KEDA pod regex,
e.g. pod="triton-test-0").

Asserts, per item role (see extract_promql.py):
  keda       exactly one series, a finite number; --phase load: above `threshold`;
             --phase idle: at or below `activation_threshold`;
  adapter, recording, dashboard
             at least one series, every value finite;
  alert      evaluates without error (an alert returns nothing unless it fires; the promtool unit
             tests prove the alerts).
Items whose `needs` are not in --have (gpu: a GPU is present; drain: a drain has happened) are
reported as skipped, never silently passed.

Ends with 'N passed, N failed, N skipped'. Exit status 1 on any failure.
"""
import argparse
import json
import math
import sys
import urllib.parse
import urllib.request


def query(base, expr, timeout=10):
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    # No proxy: the Prometheus under test is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "scalar":
        return [({}, float(data["result"][1]))]
    if data["resultType"] != "vector":
        raise RuntimeError(f"unexpected result type {data['resultType']}")
    return [(s["metric"], float(s["value"][1])) for s in data["result"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--exprs", required=True)
    ap.add_argument("--phase", choices=["load", "idle"], required=True)
    ap.add_argument("--have", default="", help="comma-separated: gpu, drain")
    args = ap.parse_args()
    have = {h for h in args.have.split(",") if h}
    with open(args.exprs) as f:
        items = json.load(f)

    passed = failed = skipped = 0
    for it in items:
        label = f"[{args.phase}] {it['role']} {it['name']} ({it['source']})"
        missing = [n for n in it.get("needs", []) if n not in have]
        if missing:
            skipped += 1
            print(f"skip {label}: needs {', '.join(missing)}")
            continue
        try:
            res = query(args.prometheus, it["expr"])
            problems = []
            values = [v for _, v in res]
            if it["role"] != "alert":
                if not res:
                    problems.append("empty result")
                if any(not math.isfinite(v) for v in values):
                    problems.append(f"non-finite value in {values}")
            if it["role"] == "keda":
                if len(res) != 1:
                    problems.append(f"{len(res)} series, KEDA needs exactly one")
                elif args.phase == "load" and not values[0] > it["threshold"]:
                    problems.append(f"under load {values[0]:g} is not above threshold {it['threshold']:g}")
                elif args.phase == "idle" and not values[0] <= it["activation_threshold"]:
                    problems.append(f"at idle {values[0]:g} is above activationThreshold {it['activation_threshold']:g}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, none aborts the run
            problems = [f"query failed: {e}"]
            values = []
        if problems:
            failed += 1
            print(f"FAIL {label}: {'; '.join(problems)}\n       {it['expr']}")
        else:
            passed += 1
            print(f"ok   {label} = {values[:4]}")
    print(f"promql-live: {passed} passed, {failed} failed, {skipped} skipped")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
