"""Python peer for benches/peers/run.sh: prometheus_client's text parser,
prometheus_client.parser.text_string_to_metric_families (the generator is drained).

For each page file: one warm-up round, then ROUNDS rounds of at least MIN_ROUND_S seconds;
prints "python-prometheus_client\t<file>\t<bytes>\t<sample lines>\t<best ns per parse>".
"""
import os
import sys
import time

from prometheus_client.parser import text_string_to_metric_families


def sample_lines(text):
    n = 0
    for line in text.split("\n"):
        t = line.lstrip(" \t")
        if t and not t.startswith("#"):
            n += 1
    return n


def main():
    rounds = int(float(os.environ.get("ROUNDS", "5")))
    min_round = float(os.environ.get("MIN_ROUND_S", "0.2"))
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
        n = sum(len(fam.samples) for fam in text_string_to_metric_families(text))
        assert n == sample_lines(text), (path, n, sample_lines(text))
        best = None
        for r in range(rounds + 1):
            t0 = time.perf_counter_ns()
            iters = 0
            while time.perf_counter_ns() - t0 < min_round * 1e9:
                for _ in text_string_to_metric_families(text):
                    pass
                iters += 1
            per = (time.perf_counter_ns() - t0) / iters
            if r > 0 and (best is None or per < best):
                best = per
        print(f"python-prometheus_client\t{path}\t{len(raw)}\t{sample_lines(text)}\t{best:.0f}", flush=True)


if __name__ == "__main__":
    main()
