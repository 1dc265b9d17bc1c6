"""Offline KD: the frozen teacher's outputs, computed once per training set.

With `config.teacher.cache_outputs` (distill on a GLUE task), the teacher's
per-example outputs on the training split, exactly what
`step.teacher_outputs` returns for a row, are computed once:

  logits [N, C] float32 and pooled mapped layers [N, L, D] float32,

N = the training rows (after `task.train_limit`). The teacher is
deterministic (no dropout) and the tokenised inputs of an example never
change between steps or epochs, so these are per-example constants. The
input pipeline then adds `t_logits` [B, C] and `t_pooled` [B, L, D] to
every training batch (gathered by `example_ids` on the host; padding rows
zeros), and the train step reads them instead of running the teacher.

They equal the per-step teacher forward up to float rounding: here every
example is padded to its own length bucket (examples are grouped by
bucket), in the step to the batch's longest bucket; padded positions are
masked out of attention and pooling, so only the summation lengths differ.

The file `<cache_dir>/<fingerprint>.npz` is keyed by a SHA-256 of
everything the outputs depend on: the teacher's parameter bytes (names,
dtypes, shapes, values), its compute dtype, the tokenised training inputs
(token and segment ids, lengths, pad id), max_len and the buckets, the
mapped teacher layer ids, the pooling, and `FORMAT_VERSION`. It is written
to a temporary file and renamed into place (`os.replace`), so a killed run
leaves no half file and several processes building the same file at once
each rename an identical one. A file that exists but cannot be read (or
holds other shapes) is an error naming it: delete it to rebuild. A wrong
file is never silently reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import time
from typing import Any, Callable, Iterator

import jax
from jax.sharding import Mesh
import numpy as np

from codir_jax import sharding
from codir_jax.data import pipeline
from codir_jax.data import tokenize

FORMAT_VERSION = 1
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_dir() -> str:
  """$XDG_CACHE_HOME/codir_jax/teacher_outputs (XDG default: ~/.cache)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache"
  )
  return os.path.join(root, "codir_jax", "teacher_outputs")


def resolve_dir(configured: str) -> str:
  """`config.teacher.cache_dir` ('' = `default_dir()`), `~` expanded."""
  return os.path.expanduser(configured or default_dir())


@dataclasses.dataclass(frozen=True)
class Outputs:
  """The cached outputs of one (teacher, data, recipe) fingerprint."""

  logits: np.ndarray  # [N, C] float32.
  pooled: np.ndarray  # [N, L, D] float32.
  path: str  # The .npz file.
  status: str  # 'hit' (read) | 'built' (computed and written).


def fingerprint(
    teacher_params: Any,
    data: tokenize.TokenizedSplit,
    *,
    buckets: tuple[int, ...],
    teacher_layers: tuple[int, ...],
    pooling: str,
    dtype: str,
) -> str:
  """SHA-256 (hex) of everything the cached outputs depend on.

  Args:
    teacher_params: the teacher's parameters (`nnx.State`, any pytree).
    data: the tokenised training split (after `task.train_limit`).
    buckets: the padded lengths (task.max_len and task.min_bucket).
    teacher_layers: the mapped 1-based teacher layer ids.
    pooling: 'mean' | 'first'.
    dtype: the teacher's compute dtype (config.teacher.dtype).
  """
  h = hashlib.sha256()

  def add(tag: str, value: Any) -> None:
    h.update(f"{tag}={value!r};".encode())

  add("format", FORMAT_VERSION)
  add("buckets", tuple(int(b) for b in buckets))
  add("max_len", int(data.max_len))
  add("teacher_layers", tuple(int(i) for i in teacher_layers))
  add("pooling", pooling)
  add("dtype", dtype)
  add("pad_id", int(data.pad_id))
  for name in ("token_ids", "type_ids", "offsets"):
    a = np.ascontiguousarray(getattr(data, name))
    add(name, (a.dtype.str, a.shape))
    h.update(a.tobytes())
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(teacher_params))
  for path, leaf in leaves:
    a = np.ascontiguousarray(np.asarray(leaf))
    add(jax.tree_util.keystr(path), (a.dtype.str, a.shape))
    h.update(a.tobytes())
  return h.hexdigest()


# (teacher params, batch) -> (logits [B, C], pooled [B, L, D]): the step's
# own `step.teacher_outputs` with the graphs and objective bound.
TeacherFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, jax.Array]]


def _jitted(teacher_fn: TeacherFn, mesh: Mesh):
  def outputs(params, batch):
    logits, pooled = teacher_fn(params, batch)
    f32 = np.float32
    return logits.astype(f32), pooled.astype(f32), batch["example_ids"]

  # Replicated outputs: every process gets every row (multi-host safe).
  return jax.jit(outputs, out_shardings=sharding.replicated(mesh))


def _row_groups(data, buckets, global_batch: int) -> Iterator[tuple]:
  """(rows [<= global_batch], bucket): examples grouped by their bucket."""
  own = np.asarray(
      [tokenize.bucket_length(max(int(n), 1), buckets) for n in data.lengths]
  )
  for t in buckets:
    idx = np.flatnonzero(own == t)
    for lo in range(0, len(idx), global_batch):
      yield idx[lo : lo + global_batch], int(t)


def compute(
    teacher_fn: TeacherFn,
    teacher_params: Any,
    data: tokenize.TokenizedSplit,
    *,
    buckets: tuple[int, ...],
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
  """`teacher_fn` of every example: ([N, C], [N, L, D]) float32.

  A jitted deterministic teacher forward over fixed-size batches of
  `batch_size` rows (rounded up to a multiple of the local devices; at
  most one compile per bucket), split over this process's devices; each
  batch holds examples of one length bucket only, padded to it; padding
  rows are dropped by example id. Every process computes every row on its
  own devices, without collectives, so processes that find the file and
  processes that build it never wait on each other.
  """
  mesh = Mesh(np.asarray(jax.local_devices()), (sharding.DATA_AXIS,))
  size = -(-batch_size // mesh.size) * mesh.size
  pad = pipeline.BatchIterator(
      data, batch_size=size, shuffle=False, buckets=buckets
  )
  fn = _jitted(teacher_fn, mesh)
  params = jax.device_put(teacher_params, sharding.replicated(mesh))
  n = len(data)
  logits = pooled = None
  seen = np.zeros(n, bool)
  for rows, t in _row_groups(data, buckets, size):
    batch = pad.pad_rows(rows, t)
    feed = {k: batch[k] for k in _MODEL_INPUTS + ("example_ids",)}
    out = jax.device_get(fn(params, sharding.put_batch(feed, mesh)))
    lg, pl, ids = (np.asarray(x) for x in out)
    if logits is None:
      logits = np.zeros((n,) + lg.shape[1:], np.float32)
      pooled = np.zeros((n,) + pl.shape[1:], np.float32)
    keep = ids >= 0
    logits[ids[keep]], pooled[ids[keep]] = lg[keep], pl[keep]
    seen[ids[keep]] = True
  if not seen.all():
    raise RuntimeError(
        f"teacher outputs cover {int(seen.sum())} of {n} training examples"
    )
  return logits, pooled


def _read(path: str, fp: str, num: int) -> tuple[np.ndarray, np.ndarray]:
  """The arrays of `path`; ValueError naming it when unreadable or wrong."""
  try:
    with np.load(path, allow_pickle=False) as f:
      logits, pooled = np.asarray(f["logits"]), np.asarray(f["pooled"])
      stored = str(f["fingerprint"])
    ok = (
        stored == fp
        and logits.dtype == pooled.dtype == np.float32
        and logits.ndim == 2
        and pooled.ndim == 3
        and len(logits) == len(pooled) == num
    )
    why = "" if ok else "it holds other shapes or another fingerprint"
  except Exception as e:  # pylint: disable=broad-exception-caught
    why = f"{type(e).__name__}: {e}"
  if why:
    raise ValueError(
        f"the teacher-output cache file {path} cannot be used ({why})."
        " Delete it and rerun to rebuild it (config.teacher.cache_outputs)."
    )
  return logits, pooled


def _write(path: str, fp: str, logits, pooled) -> None:
  """Atomically: a temporary file of this process, then one rename."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
  try:
    with open(tmp, "wb") as f:
      np.savez(f, logits=logits, pooled=pooled, fingerprint=np.asarray(fp))
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_or_build(
    teacher_fn: TeacherFn,
    teacher_params: Any,
    data: tokenize.TokenizedSplit,
    *,
    cache_dir: str,
    buckets: tuple[int, ...],
    teacher_layers: tuple[int, ...],
    pooling: str,
    dtype: str,
    batch_size: int,
) -> Outputs:
  """The cached outputs of this teacher on `data`: read, or computed.

  Args mirror `fingerprint` and `compute` (`teacher_fn` must be the step's
  `teacher_outputs` for `teacher_layers` and `pooling`); `cache_dir` is the
  resolved directory (`resolve_dir`). Logs whether the file was a hit or
  built and how long that took.
  """
  t0 = time.perf_counter()
  if not np.array_equal(data.example_ids, np.arange(len(data))):
    raise ValueError(
        "teacher outputs are gathered by example id: the ids of"
        " the training split must be 0..N-1"
    )
  fp = fingerprint(
      teacher_params,
      data,
      buckets=buckets,
      teacher_layers=teacher_layers,
      pooling=pooling,
      dtype=dtype,
  )
  path = os.path.join(cache_dir, f"{fp}.npz")
  if os.path.exists(path):
    logits, pooled = _read(path, fp, len(data))
    status = "hit"
  else:
    logits, pooled = compute(
        teacher_fn,
        teacher_params,
        data,
        buckets=buckets,
        batch_size=batch_size,
    )
    _write(path, fp, logits, pooled)
    status = "built"
  if jax.process_index() == 0:
    print(
        f"Teacher outputs ({len(data)} training examples, logits"
        f" {logits.shape[1:]}, pooled {pooled.shape[1:]}): {status} {path}"
        f" in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
  return Outputs(logits, pooled, path, status)


class WithTeacherOutputs(Iterator[pipeline.Batch]):
  """A batch iterator whose batches also hold the cached teacher outputs.

  Adds `t_logits` [B, C] and `t_pooled` [B, L, D] float32, row i the
  outputs of example `example_ids[i]` (zeros on padding rows, id -1). The
  position (`get_state`, `set_state`) is the wrapped iterator's.
  """

  def __init__(self, batches: Any, outputs: Outputs):
    self._batches = batches
    self._outputs = outputs

  @property
  def steps_per_epoch(self) -> int:
    return self._batches.steps_per_epoch

  def get_state(self) -> dict[str, Any]:
    return self._batches.get_state()

  def set_state(self, state) -> None:
    self._batches.set_state(state)

  def __iter__(self) -> "WithTeacherOutputs":
    return self

  def __next__(self) -> pipeline.Batch:
    batch = dict(next(self._batches))
    ids = np.asarray(batch["example_ids"])
    keep = ids >= 0
    for key, table in (
        ("t_logits", self._outputs.logits),
        ("t_pooled", self._outputs.pooled),
    ):
      rows = np.zeros((len(ids),) + table.shape[1:], np.float32)
      rows[keep] = table[ids[keep]]
      batch[key] = rows
    return batch
