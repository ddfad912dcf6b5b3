"""The process's resident memory, for the benchmarks' child processes (Linux `/proc/self`).

`reset_peak_rss()` then `status_mb("VmHWM")` gives the peak over a stretch of work (the train
steps, without the compiler's own memory before them); `status_mb("VmRSS")` the current size.
"""


def status_mb(field: str) -> float:
  """`VmRSS` / `VmHWM` of this process in MiB (Linux)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  raise RuntimeError(f"{field} not found in /proc/self/status")


def reset_peak_rss() -> bool:
  """Resets `VmHWM` to the current RSS (Linux >= 4.0); False where that is not allowed."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False
