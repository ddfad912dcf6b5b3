"""The run's curves without TensorBoard: `metrics.jsonl` and its picture `curves.png`.

`MetricsLog` appends one JSON object per line to `<workdir>/metrics.jsonl`:

- a training log point: `{"step": 50, "split": "train", "loss": 0.61, "learning_rate": 0.001,
  "dice_<name>": ..., "dice_mean": ...}` (the means over the window `MetricWindow` writes);
- an evaluation: `{"step": 100, "split": "val", "loss": 0.58, "dice_<name>": ...,
  "dice_mean": ...}` (the evaluator's `val_*` metrics without the prefix).

Non-finite values are written as `null`, so the file is strict JSON for `jq` or pandas. A
resumed run first cuts the log back to the restored checkpoint's step, so after a crash the
curves show each step once, as TensorBoard's `purge_step` does for the event file.

`save_curves_png` draws the log: train (and validation) loss against step on the left, the
validation Dice per class or region on the right.
"""

import json
import math
import os
import tempfile
from typing import Any, Callable, Iterable, Mapping, Sequence

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
# 800 x 320 pixels: two panels readable on a laptop, and fast to render (~0.1 s).
FIGSIZE = (10.0, 4.0)
DPI = 80


def _finite_or_none(value: Any) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def train_record(step: int, *, loss: float, learning_rate: float, dice: Sequence[float],
                 names: Sequence[str], dice_mean: float) -> dict[str, Any]:
  """A training log point as a `metrics.jsonl` record; `dice` `[K]` are named by `names`."""
  record = {"step": int(step), "split": "train", "loss": _finite_or_none(loss),
            "learning_rate": _finite_or_none(learning_rate)}
  record.update({f"dice_{n}": _finite_or_none(d) for n, d in zip(names, dice)})
  record["dice_mean"] = _finite_or_none(dice_mean)
  return record


def eval_record(step: int, metrics: Mapping[str, float]) -> dict[str, Any]:
  """An evaluation's `val_*` metrics (`Evaluator`'s) as a `metrics.jsonl` record."""
  record: dict[str, Any] = {"step": int(step), "split": "val"}
  record.update({k[len("val_"):]: _finite_or_none(v) for k, v in metrics.items()
                 if k.startswith("val_")})
  return record


def read_log(path: str) -> list[dict[str, Any]]:
  """The records of a `metrics.jsonl` (none if it is missing).

  A torn last line (the process died mid-write) is left out. Of two records with the same
  split and step (an evaluation repeated by a rerun of a finished run), the later is kept, at
  the earlier's place.
  """
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    return []
  records: dict[tuple[str, int], dict[str, Any]] = {}
  for line in lines:
    try:
      record = json.loads(line)
      key = (str(record["split"]), int(record["step"]))
    except (ValueError, KeyError, TypeError):
      continue
    records[key] = record
  return list(records.values())


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
  """Runs `write(file)` on a temp file beside `path`, then renames it to `path`.

  A reader (or a crash) sees the old file or the new one, never half of one.
  """
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def truncate_log(path: str, step: int) -> list[dict[str, Any]]:
  """Keeps the records of `path` with step <= `step` (rewritten atomically); returns them.

  Called with the restored checkpoint's step when a run starts: what a killed run logged past
  its last checkpoint is redone by the resumed run, and would otherwise appear twice.
  """
  records = [r for r in read_log(path) if r["step"] <= step]
  if os.path.exists(path):
    _atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in records))
  return records


class MetricsLog:
  """`<workdir>/metrics.jsonl`, cut back to `start_step` and appended to, one line a record.

  Args:
    workdir: the run's working directory.
    start_step: the step the run starts (or resumes) from; later records are dropped.
    names: the Dice entries' names (classes or regions), for `log_train`.

  Only the chief process writes it (the loop opens none on the other hosts).
  """

  def __init__(self, workdir: str, start_step: int, names: Sequence[str]):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.curves_path = os.path.join(workdir, CURVES_FILE)
    self.title = os.path.basename(os.path.normpath(workdir))  # which run a shared picture shows
    self.names = tuple(names)
    # Keyed like `read_log`'s, so a repeated evaluation replaces its record in the picture too.
    self._records = {(r["split"], r["step"]): r for r in truncate_log(self.path, start_step)}
    self._appended = 0
    self._drawn: int | None = None  # `_appended` when curves.png was last drawn

  @property
  def records(self) -> list[dict[str, Any]]:
    """Every record of the log, as `read_log` would read it now."""
    return list(self._records.values())

  def append(self, record: dict[str, Any]) -> None:
    """Appends `record` as one line, on disk when this returns (a kill loses no logged step).

    The file is opened for each record (a few per hundred steps), so there is no handle to
    close when the loop stops on an error.
    """
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    self._appended += 1
    self._records[(record["split"], record["step"])] = record

  def log_train(self, step: int, **scalars) -> None:
    """A training log point: `loss`, `learning_rate`, `dice` `[K]`, `dice_mean`."""
    self.append(train_record(step, names=self.names, **scalars))

  def log_eval(self, step: int, metrics: Mapping[str, float]) -> None:
    """An evaluation's `val_*` metrics at `step`."""
    self.append(eval_record(step, metrics))

  def save_curves(self) -> str:
    """Redraws `<workdir>/curves.png` from the records so far, unless it shows them already."""
    if self._drawn != self._appended or not os.path.exists(self.curves_path):
      save_curves_png(self.curves_path, self.records, title=self.title)
      self._drawn = self._appended
    return self.curves_path


def _series(records: Iterable[dict[str, Any]], split: str, key: str
            ) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` in the `split` records, sorted by step; None as NaN (a gap)."""
  points = sorted((r["step"], r[key]) for r in records if r["split"] == split and key in r)
  return ([s for s, _ in points],
          [math.nan if v is None else float(v) for _, v in points])


def _dice_names(records: Sequence[dict[str, Any]]) -> list[str]:
  """The per-class (or per-region) Dice keys of the validation records, in first-seen order."""
  names: dict[str, None] = {}
  for r in records:
    if r["split"] == "val":
      names.update((k, None) for k in r if k.startswith("dice_") and k != "dice_mean")
  return list(names)


def curves_figure(records: Sequence[dict[str, Any]], *, title: str | None = None) -> Any:
  """A matplotlib `Figure`: loss against step (left), validation Dice against step (right).

  Drawn on a private Agg canvas (no pyplot state), like `medjax.viz`. The left panel shows the
  train loss and, once there are evaluations, the validation loss; the right one each class's
  or region's validation Dice (named in the legend) and their mean, dashed.
  """
  # Imported here: the loop imports this module, and matplotlib is only needed to draw.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=FIGSIZE, dpi=DPI)
  FigureCanvasAgg(fig)
  loss_ax, dice_ax = fig.subplots(1, 2)
  for split, label, style in (("train", "train loss", dict(color="tab:blue", lw=1)),
                              ("val", "validation loss", dict(color="tab:orange", marker="o",
                                                              ms=3, lw=1.5))):
    steps, values = _series(records, split, "loss")
    if steps:
      loss_ax.plot(steps, values, label=label, **style)
  loss_ax.set_title("loss", fontsize=10)

  names = _dice_names(records)
  for key in names:
    steps, values = _series(records, "val", key)
    dice_ax.plot(steps, values, marker="o", ms=3, lw=1.2, label=key[len("dice_"):])
  steps, values = _series(records, "val", "dice_mean")
  if steps:
    dice_ax.plot(steps, values, color="black", ls="--", lw=1.5, label="mean")
  else:
    dice_ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center",
                 transform=dice_ax.transAxes, color="gray")
  dice_ax.set_ylim(-0.02, 1.02)
  dice_ax.set_title("validation Dice", fontsize=10)

  for ax in (loss_ax, dice_ax):
    ax.set_xlabel("step", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8, loc="best")
  if title:
    fig.suptitle(title, fontsize=10)
  # Fixed margins: tight_layout would draw the figure once more, doubling the time.
  fig.subplots_adjust(left=0.06, right=0.985, bottom=0.13, top=0.86 if title else 0.92,
                      wspace=0.15)
  return fig


def save_curves_png(path: str, records: Sequence[dict[str, Any]], **kwargs) -> str:
  """Writes `curves_figure(records)` as a `FIGSIZE` x `DPI` PNG at `path`, atomically."""
  path = os.fspath(path)
  fig = curves_figure(records, **kwargs)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _atomic_write(path, lambda f: fig.savefig(f, format="png"), mode="wb")
  return path
