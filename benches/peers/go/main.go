// Go peer for benches/peers/run.sh: Prometheus's strict text parser,
// expfmt.TextParser.TextToMetricFamilies (github.com/prometheus/common, Debian's
// golang-github-prometheus-common-dev). Built offline with GO111MODULE=off and
// GOPATH=/usr/share/gocode.
//
// For each page file: one warm-up round, then ROUNDS rounds of at least MIN_ROUND_S seconds;
// prints "go-expfmt\t<file>\t<bytes>\t<sample lines>\t<best ns per parse>".
package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
)

func envFloat(k string, d float64) float64 {
	if v, err := strconv.ParseFloat(os.Getenv(k), 64); err == nil {
		return v
	}
	return d
}

func sampleLines(b []byte) int {
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		t := strings.TrimLeft(l, " \t")
		if t != "" && !strings.HasPrefix(t, "#") {
			n++
		}
	}
	return n
}

func main() {
	rounds := int(envFloat("ROUNDS", 5))
	minRound := time.Duration(envFloat("MIN_ROUND_S", 0.2) * float64(time.Second))
	sink := 0
	for _, path := range os.Args[1:] {
		body, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var p expfmt.TextParser
		if _, err := p.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			os.Exit(1)
		}
		best := -1.0
		for r := 0; r <= rounds; r++ {
			t0 := time.Now()
			iters := 0
			for time.Since(t0) < minRound {
				var p expfmt.TextParser
				mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
				if err != nil {
					panic(err)
				}
				sink += len(mfs)
				iters++
			}
			per := float64(time.Since(t0).Nanoseconds()) / float64(iters)
			if r > 0 && (best < 0 || per < best) {
				best = per
			}
		}
		fmt.Printf("go-expfmt\t%s\t%d\t%d\t%.0f\n", path, len(body), sampleLines(body), best)
	}
	if sink < 0 {
		fmt.Println(sink)
	}
}
