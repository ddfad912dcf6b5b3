"""How medjax's command-line tools report a bad input: one line on stderr, exit status 1."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from absl import app


@contextlib.contextmanager
def exit_on_error(prog: str, errors: tuple[type[BaseException], ...] = (ValueError,
                                                                         FileNotFoundError)
                  ) -> Iterator[None]:
  """Turns an exception of `errors` raised inside into `{prog}: error: {message}` on stderr and
  exit status 1, without a traceback: the messages name the file or flag and what was expected.

  >>> with exit_on_error("medjax.evaluate"):
  ...   evaluation.run(pred, label)
  """
  try:
    yield
  except errors as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    sys.exit(1)


def no_positional_arguments(argv: list[str]) -> None:
  """absl passes the program name and any words left after the flags; medjax's tools take none.

  Raises:
    app.UsageError: a positional argument (absl prints it with the usage, exit status 1).
  """
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")


def int_list(values: list[str] | None, flag: str, expected: str) -> list[int] | None:
  """A comma-separated flag's words as integers (None stays None).

  Raises:
    ValueError: `--{flag} '<words>': expected {expected}.` for a word that is not an integer.
  """
  if values is None:
    return None
  try:
    return [int(v) for v in values]
  except ValueError:
    raise ValueError(f"--{flag} {','.join(values)!r}: expected {expected}.") from None
