"""pytest hooks for tests/autoscale: SIGTERM unwinds like Ctrl-C (so every pod, agent and
Prometheus is stopped), the measured summaries are printed at the end, and the session's
calibration (capacity.run_all) is shared by test_capacity.py and test_autoscale.py."""
import pathlib
import signal
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


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


@pytest.fixture(scope="session")
def calibration():
    """capacity.run_all on both models, once per session: test_capacity.py asserts on it, and
    test_autoscale.py takes one pod's measured capacity C from it (about 2 minutes)."""
    import capacity
    return {r["model"]: r for r in capacity.run_all(["unbatched", "batched"])}
