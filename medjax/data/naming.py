"""Sorting case names as a reader expects: `subject-9` before `subject-10`."""

from __future__ import annotations

import re
from typing import Any


def natural_key(name: str) -> tuple[Any, ...]:
  """Sort key of `name` with its digit runs compared as numbers: 'subject-9' < 'subject-10'."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
