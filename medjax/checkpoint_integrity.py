"""Checksums of committed checkpoints, to tell a damaged checkpoint from a changed config.

Orbax's rename-on-commit protects against a process killed mid-write, but not against what
happens to the files afterwards: a disk error, a partial copy or a sync tool truncating them.
Restoring such a checkpoint fails deep in TensorStore with the same kind of error a changed
model config gives. So once orbax has committed a step, medjax writes `medjax_checksums.json`
into its folder: the size and SHA-256 of every file in it. Before a restore the files are
checked against it:

- intact: every file is there with its size and digest;
- damaged: a file is missing, shorter, longer or different (the reason names the first one);
- unverified: no checksum file (written before medjax kept them, or killed between orbax's
  commit and the checksums); the restore is tried as it is.

A training run that resumes sets a damaged checkpoint aside in `<workdir>/damaged_checkpoints/`
and resumes from the newest intact one (`checkpoint.restore_latest_intact`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil

from medjax import io

CHECKSUMS_FILENAME = "medjax_checksums.json"
DAMAGED_DIRNAME = "damaged_checkpoints"


@dataclasses.dataclass(frozen=True)
class Verdict:
  status: str  # 'intact', 'damaged' or 'unverified'
  reason: str = ""  # for 'damaged': the first file that disagrees, and how


def _files(step_dir: str) -> list[str]:
  """Paths of the files under `step_dir`, relative to it, sorted; the checksum file left out."""
  found = []
  for root, _, names in os.walk(step_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), step_dir)
      if rel != CHECKSUMS_FILENAME:
        found.append(rel)
  return sorted(found)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksums(step_dir: str) -> None:
  """Writes `<step_dir>/medjax_checksums.json` (atomically) for a committed checkpoint."""
  entries = {}
  for rel in _files(step_dir):
    path = os.path.join(step_dir, rel)
    entries[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
  io.write_text(os.path.join(step_dir, CHECKSUMS_FILENAME),
                json.dumps({"files": entries}, indent=1, sort_keys=True))


def has_checksums(step_dir: str) -> bool:
  return os.path.exists(os.path.join(step_dir, CHECKSUMS_FILENAME))


def verify(step_dir: str) -> Verdict:
  """Checks a checkpoint folder's files against its checksum file."""
  path = os.path.join(step_dir, CHECKSUMS_FILENAME)
  try:
    with open(path, encoding="utf-8") as f:
      entries = json.load(f)["files"]
  except FileNotFoundError:
    return Verdict("unverified")
  except (ValueError, KeyError, TypeError) as e:
    return Verdict("damaged", f"{CHECKSUMS_FILENAME} is unreadable ({e})")
  for rel, expected in sorted(entries.items()):
    file = os.path.join(step_dir, rel)
    if not os.path.isfile(file):
      return Verdict("damaged", f"{rel} is missing")
    size = os.path.getsize(file)
    if size != expected["size"]:
      return Verdict("damaged", f"{rel} has {size} bytes, {expected['size']} were written")
    if _sha256(file) != expected["sha256"]:
      return Verdict("damaged", f"{rel} differs from what was written (SHA-256)")
  return Verdict("intact")


def set_aside(step_dir: str, workdir: str) -> str:
  """Moves a damaged checkpoint folder to `<workdir>/damaged_checkpoints/<step>[.n]`; returns it.

  Kept, not deleted: the user may want to inspect or repair it; out of `checkpoints/`, so
  that orbax and medjax no longer see it as a step.
  """
  damaged = os.path.join(workdir, DAMAGED_DIRNAME)
  os.makedirs(damaged, exist_ok=True)
  name = os.path.basename(os.path.normpath(step_dir))
  target, n = os.path.join(damaged, name), 1
  while os.path.exists(target):
    target, n = os.path.join(damaged, f"{name}.{n}"), n + 1
  shutil.move(step_dir, target)
  return target
