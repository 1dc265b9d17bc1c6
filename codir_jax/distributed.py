"""Several processes, one run: joining the cluster and each one's data share.

A TPU pod runs one process per host, SLURM one per task, the local launcher
(`codir_jax.launch`) N on 127.0.0.1: every process runs the same command.
`initialize(settings.Distributed)` is the first thing a run does when
`config.distributed.initialize` is set, before anything touches devices:

1. `cpu_collectives` ('gloo') is set through `jax.config` (it must precede
   `jax.distributed.initialize`). This is the only JAX flag set here; the
   numerics flags are set in `sharding.configure_jax` (one place each).
2. A process other than 0 waits until the coordinator's port accepts a
   connection; if it does not within the time-out, a TimeoutError names the
   address and the seconds (JAX itself would abort the process).
3. `jax.distributed.initialize`, guarded by a watchdog: when the cluster
   has not formed within the time-out (a process missing or started with
   another coordinator), the watchdog prints which and exits the process
   with status 1 (again instead of JAX's abort some seconds later).
4. Every process compares its `num_processes` / `process_id` with the
   cluster JAX formed (one all-gather); all raise the same ValueError on a
   mismatch, so none is left waiting in a collective.

The time-out is `DEFAULT_TIMEOUT_S` seconds, or the environment variable
`CODIR_JAX_INIT_TIMEOUT_S` (the launcher's `--init_timeout_s` sets it).

`data_share(mesh)` says which rows of each global batch this process feeds:
`make_array_from_process_local_data` expects the rows of the batch shards
that the process's devices hold. With the usual layout those are disjoint
blocks, one per process; when a mesh axis other than 'data' spans processes
(e.g. 'model' across hosts), several processes hold the same shards and
must feed the same rows.

Also here: `fail_fast` (an error ends this process at once instead of
waiting at JAX's shutdown barrier), `to_host` (parameters split across
processes, gathered for export) and `shares_compile_cache` (why several
CPU processes run without JAX's compilation cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
import numpy as np

from codir_jax.train import settings as settings_lib

TIMEOUT_ENV = "CODIR_JAX_INIT_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300
# JAX's own deadline comes this much later than ours, so ours reports.
_JAX_MARGIN_S = 30
# What bad input raises (as codir_jax/main.py prints them).
_INPUT_ERRORS = (ValueError, OSError, FloatingPointError)


def timeout_s() -> int:
  """Seconds to wait for the coordinator and the other processes."""
  raw = os.environ.get(TIMEOUT_ENV, "")
  if not raw:
    return DEFAULT_TIMEOUT_S
  if not raw.isdigit() or int(raw) < 1:
    raise ValueError(f"{TIMEOUT_ENV}={raw!r}: need a whole number >= 1")
  return int(raw)


def _wait_for_port(address: str, seconds: int) -> None:
  """Returns once `address` accepts TCP connections; else TimeoutError."""
  host, _, port = address.rpartition(":")
  host = host.strip("[]")
  deadline = time.monotonic() + seconds
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise TimeoutError(
            f"could not reach the coordinator at {address}"
            f" (config.distributed.coordinator_address) within {seconds} s"
            f" ({e.strerror or e}): is process 0 running, and is that"
            " address reachable from this host? (time-out:"
            f" {TIMEOUT_ENV})"
        ) from e
      time.sleep(0.5)


def _watchdog(seconds: int, d: settings_lib.Distributed) -> threading.Timer:
  """A started timer that ends the process if the cluster has not formed."""
  where = d.coordinator_address or "the auto-detected coordinator"
  who = f"all {d.num_processes} processes" if d.num_processes else "all"

  def fire():
    print(
        f"codir_jax: error: the JAX cluster did not form within {seconds} s"
        f" (process {d.process_id if d.process_id >= 0 else '?'}, coordinator"
        f" {where}): not {who} registered. Start every process"
        " with the same config.distributed.coordinator_address and"
        " num_processes, or raise the time-out"
        f" ({TIMEOUT_ENV}).",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)  # pylint: disable=protected-access

  timer = threading.Timer(seconds, fire)
  timer.daemon = True
  timer.start()
  return timer


def _check_cluster(d: settings_lib.Distributed) -> None:
  """Every process's settings agree with the cluster JAX formed."""
  mine = np.asarray([d.num_processes, d.process_id], np.int32)
  with jax.transfer_guard("allow"):
    every = np.asarray(multihost_utils.process_allgather(mine))
  every = every.reshape(jax.process_count(), 2)
  n = jax.process_count()
  wrong = [
      f"process {p} has num_processes={int(k)}"
      for p, (k, _) in enumerate(every)
      if k and k != n
  ]
  wrong += [
      f"process {p} has process_id={int(i)}"
      for p, (_, i) in enumerate(every)
      if i >= 0 and i != p
  ]
  if wrong:
    raise ValueError(
        f"config.distributed does not match the cluster of {n} processes"
        f" that formed: {'; '.join(wrong)}. Give every process the same"
        " num_processes (0 = auto-detect) and a distinct process_id."
    )


def initialize(d: settings_lib.Distributed) -> None:
  """Joins the cluster described by `d` (no-op unless `d.initialize`)."""
  if not d.initialize:
    return
  if jax.distributed.is_initialized():
    raise RuntimeError(
        "jax.distributed is already initialized: set"
        " config.distributed.initialize = False in this process"
    )
  if d.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", d.cpu_collectives)
  seconds = timeout_s()
  if d.coordinator_address and d.process_id > 0:
    _wait_for_port(d.coordinator_address, seconds)
  kwargs: dict[str, Any] = {}
  if d.coordinator_address:
    kwargs["coordinator_address"] = d.coordinator_address
  if d.num_processes:
    kwargs["num_processes"] = d.num_processes
  if d.process_id >= 0:
    kwargs["process_id"] = d.process_id
  timer = _watchdog(seconds, d)
  try:
    jax.distributed.initialize(
        initialization_timeout=seconds + _JAX_MARGIN_S, **kwargs
    )
  finally:
    timer.cancel()
  _check_cluster(d)


@dataclasses.dataclass(frozen=True)
class DataShare:
  """Rows of each global batch this process feeds: slice `index` of `count`.

  Processes with the same index feed identical rows. `count` divides the
  mesh's 'data' axis, so a batch that divides by that axis splits evenly.
  """

  index: int
  count: int

  def local_batch(self, global_batch: int) -> int:
    return global_batch // self.count


def data_shares(mesh: Mesh, axis: str = "data") -> dict[int, DataShare]:
  """Every process's share of a batch sharded over `axis` of `mesh`."""
  if axis not in mesh.axis_names:
    return {p: DataShare(0, 1) for p in range(jax.process_count())}
  dim = mesh.axis_names.index(axis)
  size = mesh.devices.shape[dim]
  held: dict[int, set[int]] = {}
  for pos, dev in np.ndenumerate(mesh.devices):
    held.setdefault(dev.process_index, set()).add(int(pos[dim]))
  shares = {}
  for p, positions in sorted(held.items()):
    mine, width = sorted(positions), len(positions)
    if mine != list(range(mine[0], mine[0] + width)) or mine[0] % width:
      raise ValueError(
          f"process {p} holds positions {mine} of the mesh's '{axis}' axis"
          f" (size {size}): each process must hold one aligned block of"
          " it. List the mesh axes that span processes first in"
          " config.mesh, e.g. [('model', hosts), ('data', -1)]."
      )
    shares[p] = DataShare(mine[0] // width, size // width)
  return shares


def data_share(mesh: Mesh, axis: str = "data") -> DataShare:
  """This process's share of a batch sharded over `axis` of `mesh`."""
  return data_shares(mesh, axis)[jax.process_index()]


def one_share_per_process(mesh: Mesh) -> bool:
  """Several processes, process p feeding slice p (the same on all)."""
  shares = data_shares(mesh)
  return len(shares) > 1 and all(
      sh == DataShare(p, len(shares)) for p, sh in shares.items()
  )


def check_share(num_rows: int, share: DataShare, local_batch: int, what: str):
  """Raises on every process if some process's slice of `num_rows` is empty.

  Slice i of a global batch holds rows [i * local_batch, (i + 1) *
  local_batch); every process knows `num_rows`, so all raise together.
  """
  filled = -(-num_rows // local_batch)  # Slices with at least one row.
  if filled < share.count:
    raise ValueError(
        f"the processes feeding slices {filled}..{share.count - 1} of each"
        f" global batch would get no row of {what}: its {num_rows} rows fill"
        f" {filled} of {share.count} slices of {local_batch} rows. Use more"
        " data, a smaller config.optim.batch_size or fewer processes."
    )


def shares_compile_cache() -> bool:
  """Whether every process can load the programs process 0 cached.

  JAX (0.10) keys a persistent-cache entry by, among others, a fingerprint
  of the devices' topology, and only process 0 writes entries. On CPU that
  fingerprint differs from process to process, so with several CPU
  processes process 0 would load its programs in seconds while the others
  compile theirs for minutes, and gloo gives up setting up the first
  collective after 30 s. The trainer turns the cache off then.
  """
  return jax.process_count() == 1 or jax.default_backend() != "cpu"


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
  """With several processes, an error ends this process at once.

  Without it, the exit would wait up to 5 minutes at JAX's shutdown
  barrier for processes that are themselves waiting for this one in a
  collective. Ending now (status 1, after printing the error) lets the
  others fail as soon as JAX's coordination service, or the launcher,
  notices. A single process raises as usual.
  """
  try:
    yield
  except BaseException as e:  # pylint: disable=broad-exception-caught
    if not jax.distributed.is_initialized() or isinstance(e, SystemExit):
      raise
    # As the CLI: bad input as one paragraph (traceback with --verbosity=1).
    if not isinstance(e, _INPUT_ERRORS) or logging.get_verbosity() >= 1:
      traceback.print_exc()
    print(
        f"codir_jax: error (process {jax.process_index()} of"
        f" {jax.process_count()}): {e}",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access


def to_host(tree: Any) -> Any:
  """Numpy copy of a pytree of (possibly multi-process sharded) arrays.

  Every process must call it (an array split across processes is
  all-gathered); a replicated or local array is copied without traffic.
  """

  def one(x):
    if isinstance(x, jax.Array) and not (
        x.is_fully_addressable or x.is_fully_replicated
    ):
      with jax.transfer_guard("allow"):
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)
