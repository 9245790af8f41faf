// keda-metrics-api: what KEDA's metrics-api scaler (format: prometheus,
// aggregateFromKubeServiceEndpoints: true) reads from a set of agent pages, with the real
// Prometheus text parser KEDA uses (github.com/prometheus/common/expfmt, TextParser).
//
//	keda-metrics-api -value-location SELECTOR -aggregation sum|average|max|min PAGE...
//
// Each PAGE is an http(s) URL (GET, 200 required) or a file. Modelled on
// pkg/scalers/metrics_api_scaler.go (getValueFromPrometheusResponse,
// aggregateMetricsFromMultipleEndpoints):
//   - the selector's metric name picks the family; the first series whose labels equal every
//     other matcher's value gives the value (untyped, counter or gauge); the matcher's type is
//     not looked at (KEDA compares equality only);
//   - a page that fails (request, status, parse, family or series absent) is skipped; sum adds
//     the others, average divides by the pages that answered, max/min take theirs; every page
//     failing is an error.
//
// Prints one JSON object: {"value": V|null, "answered": N, "pages": M, "errors": [...], "per_page": [...]}.
// Exit 0 when a value came out, 1 when every page failed, 2 on bad arguments.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
)

type matcher struct{ name, value string }

var selectorRe = regexp.MustCompile(`^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*$`)
var labelRe = regexp.MustCompile(`\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:[^"\\]|\\.)*)"\s*,?`)

func parseSelector(s string) (string, []matcher, error) {
	m := selectorRe.FindStringSubmatch(s)
	if m == nil {
		return "", nil, fmt.Errorf("valueLocation %q is not a metric selector", s)
	}
	var ms []matcher
	rest := m[2]
	for strings.TrimSpace(rest) != "" {
		lm := labelRe.FindStringSubmatchIndex(rest)
		if lm == nil || lm[0] != 0 {
			return "", nil, fmt.Errorf("valueLocation %q: cannot parse matchers %q", s, rest)
		}
		ms = append(ms, matcher{rest[lm[2]:lm[3]], rest[lm[6]:lm[7]]})
		rest = rest[lm[1]:]
	}
	return m[1], ms, nil
}

func read(page string) ([]byte, error) {
	if strings.HasPrefix(page, "http://") || strings.HasPrefix(page, "https://") {
		c := http.Client{Timeout: 3 * time.Second}
		r, err := c.Get(page)
		if err != nil {
			return nil, err
		}
		defer r.Body.Close()
		if r.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: api returned %d", page, r.StatusCode)
		}
		return io.ReadAll(r.Body)
	}
	return os.ReadFile(page)
}

func value(body []byte, name string, ms []matcher) (float64, error) {
	text := strings.ReplaceAll(string(body), "\r\n", "\n")
	if len(text) > 0 && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return 0, fmt.Errorf("prometheus format parsing error: %w", err)
	}
	fam, ok := families[name]
	if !ok {
		return 0, fmt.Errorf("metric '%s' not found", name)
	}
	for _, metric := range fam.GetMetric() {
		match := true
		for _, m := range ms {
			found := false
			for _, l := range metric.GetLabel() {
				if l.GetName() == m.name && l.GetValue() == m.value {
					found = true
				}
			}
			if !found {
				match = false
			}
		}
		if !match {
			continue
		}
		if u := metric.GetUntyped(); u != nil && u.Value != nil {
			return *u.Value, nil
		}
		if c := metric.GetCounter(); c != nil && c.Value != nil {
			return *c.Value, nil
		}
		if g := metric.GetGauge(); g != nil && g.Value != nil {
			return *g.Value, nil
		}
	}
	return 0, fmt.Errorf("value %s not found", name)
}

func main() {
	loc := flag.String("value-location", "", "the trigger's valueLocation")
	agg := flag.String("aggregation", "average", "sum, average, max or min")
	flag.Parse()
	name, ms, err := parseSelector(*loc)
	if err != nil || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: keda-metrics-api -value-location SELECTOR -aggregation sum|average|max|min PAGE...", err)
		os.Exit(2)
	}
	type pageResult struct {
		Page  string   `json:"page"`
		Value *float64 `json:"value"`
		Error string   `json:"error,omitempty"`
	}
	out := struct {
		Value    *float64     `json:"value"`
		Answered int          `json:"answered"`
		Pages    int          `json:"pages"`
		Errors   []string     `json:"errors"`
		PerPage  []pageResult `json:"per_page"`
	}{Pages: flag.NArg(), Errors: []string{}}
	var acc float64
	first := true
	for _, page := range flag.Args() {
		body, err := read(page)
		var v float64
		if err == nil {
			v, err = value(body, name, ms)
		}
		if err != nil {
			out.Errors = append(out.Errors, err.Error())
			out.PerPage = append(out.PerPage, pageResult{Page: page, Error: err.Error()})
			continue
		}
		vv := v
		out.PerPage = append(out.PerPage, pageResult{Page: page, Value: &vv})
		out.Answered++
		switch *agg {
		case "min":
			if first || v < acc {
				acc = v
			}
		case "max":
			if first || v > acc {
				acc = v
			}
		default:
			acc += v
		}
		first = false
	}
	if out.Answered > 0 {
		if *agg == "average" {
			acc /= float64(out.Answered)
		}
		out.Value = &acc
	}
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(out)
	if out.Value == nil {
		os.Exit(1)
	}
}
