"""The HPA v2 algorithm, as kube-controller-manager runs it for a KEDA ScaledObject.

KEDA turns each trigger of a ScaledObject into an *External* metric of the HPA it creates
(minReplicas = minReplicaCount, maxReplicas = maxReplicaCount, behavior from
spec.advanced.horizontalPodAutoscalerConfig). Every sync period (kube-controller-manager's
--horizontal-pod-autoscaler-sync-period, 15 s) the HPA asks KEDA's metrics server for each
metric, which runs the trigger's PromQL query, and then (pkg/controller/podautoscaler):

per metric (replica_calculator.go)
  AverageValue  GetExternalPerPodMetricReplicas(statusReplicas):
                ratio = usage / (target * statusReplicas);
                if |1 - ratio| > tolerance: replicas = ceil(usage / target) else statusReplicas
  Value         GetExternalMetricReplicas(specReplicas) -> getUsageRatioReplicaCount:
                ratio = usage / target; if |1 - ratio| <= tolerance: specReplicas
                else ceil(ratio * readyPodCount)   (pods of the selector with Ready = True)
  Pods          (the comparison's prometheus-adapter signals, not KEDA) GetMetricReplicas ->
                calcPlainMetricReplicas(specReplicas): one value per pod of the Deployment;
                terminating pods are ignored; ratio = mean over the pods with a value / target;
                no pod missing: within tolerance -> specReplicas, else ceil(ratio * #values);
                pods missing a value (a starting pod) count as 0 when ratio > 1 and as the
                target when ratio < 1, then: within tolerance, or the direction flipped ->
                specReplicas, else ceil(new ratio * #pods) (not below/above specReplicas
                against the direction).
  Values travel as Kubernetes quantities in milli-units (KEDA: resource.NewMilliQuantity),
  so they are truncated to 0.001 here as well.
over metrics    the largest proposal; a metric that fails is skipped, and when some failed the
                HPA does not scale down (computeReplicasForMetrics); all failed: no change.
behavior        (horizontal.go, normalizeDesiredReplicasWithBehaviors)
  1. stabilisation: upRec = min of the recommendations of the last scaleUp window (and now),
     downRec = max of those of the last scaleDown window (and now); the result is current
     replicas brought into [upRec, downRec];
  2. rate limits: scaling up is limited by calculateScaleUpLimitWithScalingRules (each policy
     proposes periodStartReplicas + Value, or ceil(periodStartReplicas * (1 + Value/100));
     selectPolicy Max takes the largest, Min the smallest), then by maxReplicas; down likewise
     (periodStartReplicas - Value, or trunc(periodStartReplicas * (1 - Value/100))), then by
     minReplicas. periodStartReplicas = current - added + deleted within the policy's period.
  3. a scale event is recorded when the replica count changes.
The default tolerance is 0.1 (--horizontal-pod-autoscaler-tolerance).

scalingModifiers (KEDA, pkg/scaling/modifiers): with advanced.scalingModifiers the HPA gets one
                External metric, the formula over the triggers' values by trigger name
                (expr-lang; the subset here: numbers, names, + - * /, comparisons, `c ? a : b`,
                parentheses, min/max/ceil/floor/abs, `??`), with the formula's target and
                metricType; a failing trigger fails the composite metric (no change).
Not modelled: KEDA's fallback (it only acts after failureThreshold failed polls in a row; the
harness reports any failed query), scaling to/from zero (minReplicaCount is 1), and the
behavior-less legacy path.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

TOLERANCE = 0.1


@dataclasses.dataclass
class Policy:
    type: str  # "Pods" | "Percent"
    value: int
    period_s: float


@dataclasses.dataclass
class Rules:
    stabilization_s: float
    policies: List[Policy]
    select: str = "Max"  # Max | Min | Disabled


@dataclasses.dataclass
class Trigger:
    name: str
    metric_type: str  # AverageValue | Value | Pods (AverageValue of a per-pod metric)
    query: str        # PromQL, or for metrics-api the valueLocation
    threshold: float
    # issue 21: "prometheus", or "metrics-api" (KEDA reading every ready endpoint of a Service:
    # format prometheus, aggregateFromKubeServiceEndpoints, with this aggregationType)
    source: str = "prometheus"
    aggregation: Optional[str] = None


PODS_ANNOTATION = "tests.triton-sidecar/pods-metrics"
COMPOSITE = "composite-metric"  # KEDA's kedav1alpha1.CompositeMetricName


def quantity(v) -> float:
    """A Kubernetes quantity as written in a manifest: 8, "8", "0.7", "1000m"."""
    t = str(v).strip()
    return float(t[:-1]) / 1000.0 if t.endswith("m") else float(t)


def pods_proposal(trigger: Trigger, per_pod: Dict[str, float], pods: Sequence[str], spec_replicas: int,
                  tolerance: float = TOLERANCE) -> Optional[int]:
    """calcPlainMetricReplicas for a Pods metric (AverageValue target). `per_pod`: pod -> value
    (from the query, any pod); `pods`: the Deployment's pods that are not terminating. None when
    no pod has a value (the HPA's error: no metrics returned)."""
    target = _milli(trigger.threshold)
    metrics = {p: _milli(v) for p, v in per_pod.items() if p in pods and math.isfinite(v)}
    if not metrics:
        return None
    missing = [p for p in pods if p not in metrics]
    ratio = sum(metrics.values()) / len(metrics) / target
    if not missing:
        if abs(1.0 - ratio) <= tolerance:
            return spec_replicas
        return int(math.ceil(ratio * len(metrics)))
    fill = target if ratio < 1.0 else 0.0
    for p in missing:
        metrics[p] = fill
    new_ratio = sum(metrics.values()) / len(metrics) / target
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 and new_ratio > 1.0) or (ratio > 1.0 and new_ratio < 1.0):
        return spec_replicas
    n = int(math.ceil(new_ratio * len(metrics)))
    if (new_ratio < 1.0 and n > spec_replicas) or (new_ratio > 1.0 and n < spec_replicas):
        return spec_replicas
    return n


class FormulaError(ValueError):
    pass


class Formula:
    """A KEDA scalingModifiers formula (expr-lang), the subset deploy/ and the tests use. Parsed
    once; evaluate(values) with the triggers' values by name. Unknown names and syntax outside
    the subset raise FormulaError at parse time, as KEDA's admission check compiles the formula
    against the trigger names."""

    _FUNCS = {"min": min, "max": max, "ceil": math.ceil, "floor": math.floor, "abs": abs}

    def __init__(self, text: str, names: Sequence[str]):
        self.text = text
        self.names = set(names)
        self.toks = re.findall(r"\s*(\d+\.\d*|\.\d+|\d+|[A-Za-z_][A-Za-z0-9_]*|\?\?|>=|<=|==|!=|[-+*/()<>?:,])", text)
        if "".join(self.toks) != re.sub(r"\s+", "", text):
            raise FormulaError(f"formula {text!r}: characters outside the modelled subset")
        self.pos = 0
        self.tree = self._ternary()
        if self.pos != len(self.toks):
            raise FormulaError(f"formula {text!r}: unexpected {self.toks[self.pos]!r}")

    # recursive descent, lowest precedence first: ?:, ??, comparisons, + -, * /, unary, atoms
    def _peek(self):
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def _take(self, want=None):
        t = self._peek()
        if t is None or (want is not None and t != want):
            raise FormulaError(f"formula {self.text!r}: expected {want or 'more'}, got {t!r}")
        self.pos += 1
        return t

    def _ternary(self):
        c = self._coalesce()
        if self._peek() == "?":
            self._take("?")
            a = self._ternary()
            self._take(":")
            b = self._ternary()
            return ("?", c, a, b)
        return c

    def _coalesce(self):
        a = self._compare()
        while self._peek() == "??":
            self._take()
            a = ("??", a, self._compare())
        return a

    def _compare(self):
        a = self._sum()
        if self._peek() in (">", "<", ">=", "<=", "==", "!="):
            op = self._take()
            a = (op, a, self._sum())
        return a

    def _left_assoc(self, ops, operand):
        a = operand()
        while self._peek() in ops:
            op = self._take()
            a = (op, a, operand())
        return a

    def _sum(self):
        return self._left_assoc(("+", "-"), self._product)

    def _product(self):
        return self._left_assoc(("*", "/"), self._unary)

    def _unary(self):
        if self._peek() == "-":
            self._take()
            return ("neg", self._unary())
        return self._atom()

    def _atom(self):
        t = self._take()
        if t == "(":
            e = self._ternary()
            self._take(")")
            return e
        if t[0].isdigit() or t[0] == ".":
            return ("num", float(t))
        if t in self._FUNCS and self._peek() == "(":
            self._take("(")
            args = [self._ternary()]
            while self._peek() == ",":
                self._take(",")
                args.append(self._ternary())
            self._take(")")
            return ("call", t, args)
        if t[0].isalpha() or t[0] == "_":
            if t not in self.names:
                raise FormulaError(f"formula {self.text!r}: {t!r} is not a trigger name ({sorted(self.names)})")
            return ("name", t)
        raise FormulaError(f"formula {self.text!r}: unexpected {t!r}")

    def evaluate(self, values: Dict[str, Optional[float]]) -> Optional[float]:
        def ev(n):
            k = n[0]
            if k == "num":
                return n[1]
            if k == "name":
                return values.get(n[1])
            if k == "??":
                a = ev(n[1])
                return a if a is not None else ev(n[2])
            if k == "?":
                c = ev(n[1])
                if c is None:
                    raise FormulaError("a condition on a missing value")
                return ev(n[2]) if c else ev(n[3])
            if k == "neg":
                a = ev(n[1])
                return None if a is None else -a
            if k == "call":
                args = [ev(a) for a in n[2]]
                if any(a is None for a in args):
                    raise FormulaError(f"{n[1]}() of a missing value")
                return float(self._FUNCS[n[1]](*args))
            a, b = ev(n[1]), ev(n[2])
            if a is None or b is None:
                raise FormulaError(f"{k} on a missing value")
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
                    "/": lambda: a / b if b else math.inf,
                    ">": lambda: a > b, "<": lambda: a < b, ">=": lambda: a >= b, "<=": lambda: a <= b,
                    "==": lambda: a == b, "!=": lambda: a != b}[k]()
        try:
            v = ev(self.tree)
        except FormulaError:
            return None
        return None if v is None else float(v)


@dataclasses.dataclass
class Modifiers:
    """advanced.scalingModifiers: the composite metric replaces the triggers' metrics."""
    formula: Formula
    target: float
    metric_type: str = "AverageValue"


@dataclasses.dataclass
class HpaSpec:
    min_replicas: int
    max_replicas: int
    scale_up: Rules
    scale_down: Rules
    triggers: List[Trigger]
    tolerance: float = TOLERANCE
    modifiers: Optional[Modifiers] = None


def _milli(v: float) -> float:
    """A Kubernetes quantity's milli-value (KEDA: resource.NewMilliQuantity(int64(v*1000)))."""
    return math.trunc(v * 1000.0) / 1000.0


def proposal(trigger: Trigger, value: float, spec_replicas: int, status_replicas: int, ready_pods: int,
             tolerance: float = TOLERANCE) -> int:
    """The replica count one External metric asks for (replica_calculator.go)."""
    usage = _milli(value)
    target = _milli(trigger.threshold)
    if trigger.metric_type == "AverageValue":
        replicas = status_replicas
        ratio = usage / (target * replicas) if replicas else math.inf
        if abs(1.0 - ratio) > tolerance:
            replicas = int(math.ceil(usage / target))
        return replicas
    if trigger.metric_type == "Value":
        ratio = usage / target
        if spec_replicas == 0:
            return int(math.ceil(ratio))
        if abs(1.0 - ratio) <= tolerance:
            return spec_replicas
        return int(math.ceil(ratio * ready_pods))
    raise ValueError(f"metricType {trigger.metric_type!r}")


@dataclasses.dataclass
class Decision:
    t: float
    current: int
    values: Dict[str, Optional[float]]
    proposals: Dict[str, Optional[int]]
    metric_desired: Optional[int]  # max over the metrics (None: every metric failed)
    stabilized: int
    desired: int
    reason: str


class Hpa:
    """Holds the HPA controller's memory (recommendations, scale events) for one target."""

    def __init__(self, spec: HpaSpec):
        self.spec = spec
        self.recommendations: List[Tuple[float, int]] = []
        self.up_events: List[Tuple[float, int]] = []
        self.down_events: List[Tuple[float, int]] = []

    # ---------------------------------------------------------------- behavior
    def _stabilize(self, now: float, current: int, desired: int) -> Tuple[int, str]:
        up_cut = now - self.spec.scale_up.stabilization_s
        down_cut = now - self.spec.scale_down.stabilization_s
        up_rec = down_rec = desired
        for t, r in self.recommendations:
            if t > up_cut:
                up_rec = min(r, up_rec)
            if t > down_cut:
                down_rec = max(r, down_rec)
        rec = current
        if rec < up_rec:
            rec = up_rec
        if rec > down_rec:
            rec = down_rec
        # Keep what either window still needs (the controller reuses one outdated slot; the
        # effect on the windows is the same).
        keep_after = min(up_cut, down_cut)
        self.recommendations = [(t, r) for t, r in self.recommendations if t >= keep_after]
        self.recommendations.append((now, desired))
        if rec != desired:
            return rec, "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
        return rec, "ReadyForNewScale"

    @staticmethod
    def _changes(period_s: float, events: Sequence[Tuple[float, int]], now: float) -> int:
        cut = now - period_s
        return sum(n for t, n in events if t > cut)

    def _up_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_up
        if rules.select == "Disabled":
            return current
        pick, result = (min, math.inf) if rules.select == "Min" else (max, -math.inf)
        for p in rules.policies:
            start = current - self._changes(p.period_s, self.up_events, now) + self._changes(p.period_s, self.down_events, now)
            prop = start + p.value if p.type == "Pods" else int(math.ceil(start * (1 + p.value / 100.0)))
            result = pick(result, prop)
        return int(result)

    def _down_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_down
        if rules.select == "Disabled":
            return current
        pick, result = (max, -math.inf) if rules.select == "Min" else (min, math.inf)
        for p in rules.policies:
            start = current - self._changes(p.period_s, self.up_events, now) + self._changes(p.period_s, self.down_events, now)
            prop = start - p.value if p.type == "Pods" else int(start * (1 - p.value / 100.0))
            result = pick(result, prop)
        return int(result)

    def _rate_limit(self, now: float, current: int, desired: int) -> Tuple[int, str]:
        if desired > current:
            limit = max(self._up_limit(now, current), current)
            if self.spec.max_replicas > limit:
                maximum, why = limit, "ScaleUpLimit"
            else:
                maximum, why = self.spec.max_replicas, "TooManyReplicas"
            if desired > maximum:
                return maximum, why
        elif desired < current:
            limit = min(self._down_limit(now, current), current)
            if self.spec.min_replicas < limit:
                minimum, why = limit, "ScaleDownLimit"
            else:
                minimum, why = self.spec.min_replicas, "TooFewReplicas"
            if desired < minimum:
                return minimum, why
        return desired, "DesiredWithinRange"

    # ---------------------------------------------------------------- one sync
    def sync(self, now: float, values: Dict[str, object], spec_replicas: int, status_replicas: int,
             ready_pods: int, pods: Sequence[str] = ()) -> Decision:
        """One reconcile: `values` maps trigger name -> query value (None when the query failed
        or answered no single series; for a Pods trigger a dict pod -> value), `pods` the names
        of the Deployment's pods that are not terminating. Returns the Decision; the caller
        scales when desired != current, and must then call record_scale()."""
        current = spec_replicas
        props: Dict[str, Optional[int]] = {}
        mods = self.spec.modifiers
        if mods is not None:
            # One composite metric: every trigger must answer (KEDA fails the metric otherwise).
            vals = {tr.name: values.get(tr.name) for tr in self.spec.triggers}
            ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals.values())
            composite = mods.formula.evaluate(vals) if ok else None
            values = {**values, COMPOSITE: composite}
            props[COMPOSITE] = None if composite is None or not math.isfinite(composite) else proposal(
                Trigger(COMPOSITE, mods.metric_type, mods.formula.text, mods.target), composite,
                spec_replicas, status_replicas, ready_pods, self.spec.tolerance)
        for tr in self.spec.triggers if mods is None else ():
            v = values.get(tr.name)
            if tr.metric_type == "Pods":
                props[tr.name] = None if not isinstance(v, dict) else pods_proposal(
                    tr, v, pods, spec_replicas, self.spec.tolerance)
                continue
            props[tr.name] = None if v is None or not math.isfinite(v) else proposal(
                tr, v, spec_replicas, status_replicas, ready_pods, self.spec.tolerance)
        valid = [p for p in props.values() if p is not None]
        if current > self.spec.max_replicas:
            return Decision(now, current, values, props, None, current, self.spec.max_replicas, "AboveMax")
        if current < self.spec.min_replicas:
            return Decision(now, current, values, props, None, current, self.spec.min_replicas, "BelowMin")
        if not valid:
            return Decision(now, current, values, props, None, current, current, "FailedGetExternalMetric")
        metric_desired = max(valid)
        if len(valid) < len(props) and metric_desired < current:
            # computeReplicasForMetrics: with an invalid metric, never scale down.
            return Decision(now, current, values, props, metric_desired, current, current, "InvalidMetricNoScaleDown")
        stabilized, why = self._stabilize(now, current, metric_desired)
        desired, why2 = self._rate_limit(now, current, stabilized)
        reason = why2 if why2 != "DesiredWithinRange" or why == "ReadyForNewScale" else why
        return Decision(now, current, values, props, metric_desired, stabilized, desired, reason)

    def record_scale(self, now: float, old: int, new: int) -> None:
        """storeScaleEvent: keep events for the longest policy period of their direction."""
        if new > old:
            keep = max((p.period_s for p in self.spec.scale_up.policies), default=0)
            self.up_events = [(t, n) for t, n in self.up_events if t >= now - keep] + [(now, new - old)]
        elif new < old:
            keep = max((p.period_s for p in self.spec.scale_down.policies), default=0)
            self.down_events = [(t, n) for t, n in self.down_events if t >= now - keep] + [(now, old - new)]


# ---------------------------------------------------------------------------- from the manifest


def _rules(d: dict, default_window: float) -> Rules:
    d = d or {}
    pols = [Policy(p["type"], int(p["value"]), float(p["periodSeconds"])) for p in d.get("policies") or []]
    win = d.get("stabilizationWindowSeconds")
    return Rules(float(default_window if win is None else win), pols, d.get("selectPolicy", "Max"))


def spec_from_scaledobject(so: dict, max_cap: Optional[int] = None) -> HpaSpec:
    """HpaSpec from a rendered ScaledObject (KEDA's defaults where a field is absent:
    minReplicaCount 0, maxReplicaCount 100; the HPA's: scale-up window 0 and 100 % or 4 pods per
    15 s, scale-down window 300 s and 100 % per 15 s). `max_cap` lowers maxReplicaCount (this
    machine's limit), never raises it."""
    s = so["spec"]
    beh = (((s.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")) or {}
    up = _rules(beh.get("scaleUp") or {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15},
                                                     {"type": "Pods", "value": 4, "periodSeconds": 15}]}, 0)
    down = _rules(beh.get("scaleDown") or {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}, 300)
    mx = int(s.get("maxReplicaCount", 100))
    if max_cap is not None:
        mx = min(mx, max_cap)
    triggers = []
    pods_metrics = set(((so.get("metadata") or {}).get("annotations") or {}).get(PODS_ANNOTATION, "").split(","))
    for t in s.get("triggers") or []:
        if t.get("type") == "metrics-api":
            md = t["metadata"]
            if md.get("format") != "prometheus" or md.get("aggregateFromKubeServiceEndpoints") != "true":
                raise ValueError(f"metrics-api trigger {t.get('name')}: only format prometheus with "
                                 "aggregateFromKubeServiceEndpoints is modelled")
            triggers.append(Trigger(t["name"], t.get("metricType", "AverageValue"), md["valueLocation"],
                                    quantity(md["targetValue"]), source="metrics-api",
                                    aggregation=md.get("aggregationType", "average")))
            continue
        if t.get("type") != "prometheus":
            raise ValueError(f"trigger type {t.get('type')!r} is not modelled")
        md = t["metadata"]
        name = t.get("name") or md["query"][:20]
        mtype = t.get("metricType", "AverageValue")
        if name in pods_metrics:
            if mtype != "AverageValue":
                raise ValueError(f"Pods metric {name}: only an AverageValue target is modelled")
            mtype = "Pods"
        triggers.append(Trigger(name, mtype, " ".join(md["query"].split()), quantity(md["threshold"])))
    mods = None
    sm = (s.get("advanced") or {}).get("scalingModifiers") or {}
    if sm.get("formula"):
        if "target" not in sm:
            raise ValueError("scalingModifiers: a formula needs a target")
        mods = Modifiers(Formula(sm["formula"], [t.name for t in triggers]), quantity(sm["target"]),
                         sm.get("metricType", "AverageValue"))
    return HpaSpec(int(s.get("minReplicaCount", 0)), mx, up, down, triggers, modifiers=mods)
