"""pytest hooks for tests/autoscale: SIGTERM unwinds like Ctrl-C (so every pod, agent and
Prometheus is stopped), and the measured summary is printed at the end."""
import signal
import sys


def pytest_configure(config):
    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("test_autoscale")
    report = getattr(mod, "REPORT", None)
    if not report:
        return
    tr = terminalreporter
    tr.section("autoscaling loop: measured")
    for line in report:
        tr.write_line(line)
