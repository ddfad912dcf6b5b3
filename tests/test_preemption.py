"""The preemption guard: a real SIGTERM sets the flag; the previous handlers come back."""

import os
import signal
import threading
import time

import pytest

from medjax.training import preemption


def _wait_for(predicate, seconds=2.0):
  deadline = time.monotonic() + seconds
  while not predicate() and time.monotonic() < deadline:
    time.sleep(0.005)  # the handler runs at the next bytecode boundary


def test_sigterm_sets_the_flag_and_handlers_are_restored():
  before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with preemption.StopRequest() as stop:
    assert stop.signum is None
    assert signal.getsignal(signal.SIGTERM) == stop._handle  # pylint: disable=protected-access
    os.kill(os.getpid(), signal.SIGTERM)
    _wait_for(lambda: stop.signum is not None)
    assert stop.signum == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
      os.kill(os.getpid(), signal.SIGTERM)
      _wait_for(lambda: False, seconds=0.2)
  assert {s: signal.getsignal(s) for s in before} == before


def test_off_the_main_thread_signals_are_left_alone():
  before = signal.getsignal(signal.SIGTERM)
  seen = {}

  def run():
    with preemption.StopRequest() as stop:
      seen["handler"] = signal.getsignal(signal.SIGTERM)
      seen["signum"] = stop.signum

  thread = threading.Thread(target=run)
  thread.start()
  thread.join()
  assert seen == {"handler": before, "signum": None}
  assert signal.getsignal(signal.SIGTERM) is before
