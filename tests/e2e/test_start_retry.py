"""start_triton() retries exactly one failure once: a model's Python stub that lost pytriton's
start-up handshake (`ConnectionRefusedError` in `get_config_from_handshake_server`). Injected with
a start script that fails that way (tests/e2e/fixtures/fake_handshake_loss.py); no Triton runs."""

import os
import pathlib
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import start_triton  # noqa: E402

FAKE = pathlib.Path(__file__).parent / "fixtures" / "fake_handshake_loss.py"


def _start(tmp_path, monkeypatch, failures):
    counter = tmp_path / "starts"
    monkeypatch.setenv("FAKE_HANDSHAKE_COUNTER", str(counter))
    monkeypatch.setenv("FAKE_HANDSHAKE_FAILURES", str(failures))
    return counter, start_triton(script=FAKE, python=sys.executable, startup_timeout=20, stop_grace=5)


def test_one_handshake_loss_is_retried_once(tmp_path, monkeypatch, capsys):
    counter, cm = _start(tmp_path, monkeypatch, failures=1)
    with cm as t:
        assert t.triton_alive()
    assert counter.read_text() == "2"
    assert "RETRY: a model's Python stub lost pytriton's start-up handshake" in capsys.readouterr().err


def test_a_second_handshake_loss_fails(tmp_path, monkeypatch):
    counter, cm = _start(tmp_path, monkeypatch, failures=2)
    with pytest.raises(RuntimeError, match="lost pytriton's stub handshake twice"):
        with cm:
            pass
    assert counter.read_text() == "2"
