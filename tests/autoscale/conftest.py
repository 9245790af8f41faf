"""pytest hooks for tests/autoscale: SIGTERM unwinds like Ctrl-C (so every pod, agent and
Prometheus is stopped), and the measured summary is printed at the end."""
import signal
import sys


def pytest_configure(config):
    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, _term)


def pytest_terminal_summary(terminalreporter):
    tr = terminalreporter
    for name, title in (("test_capacity", "capacity gauges: calibration and proportionality, measured"),
                        ("test_autoscale", "autoscaling loop: measured")):
        report = getattr(sys.modules.get(name), "REPORT", None)
        if not report:
            continue
        tr.section(title)
        for line in report:
            tr.write_line(line)
