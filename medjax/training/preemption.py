"""The preemption guard: SIGTERM or SIGINT asks the loop to checkpoint and stop at a step."""

import signal


class StopRequest:
  """Turns SIGTERM/SIGINT into a flag so the loop can checkpoint before exiting.

  Inside `with StopRequest() as stop:`, the first signal sets `stop.signum` (the loop saves a
  checkpoint at the end of the step and stops); a second one raises `KeyboardInterrupt` at once.
  On exit the previous handlers are restored. Off the main thread, where Python cannot install
  signal handlers, the guard leaves signals alone and `signum` stays None.
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self) -> "StopRequest":
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # a second Ctrl-C stops at once
      raise KeyboardInterrupt
    self.signum = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
