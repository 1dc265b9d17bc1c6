"""Device mesh, logical-axis rules and sharding helpers.

One mesh per run, built from `config.mesh`, a list of `(axis_name, size)`
pairs such as `[("data", -1), ("model", 1)]` (-1 = all remaining devices).

Parameters carry logical axis names (`embed`, `mlp`, `heads`, `vocab`, ...)
in their `out_sharding` metadata; `config.sharding_rules` maps each logical
name to a mesh axis or to None (replicated). With the default rules and a
`model` axis of size 1 every parameter is replicated; with `model` > 1 the
large matrices (FFN, attention projections, vocabulary) are split over it.
A dimension that does not divide by its mesh axis stays replicated.

The batch is sharded over `data`; so is the memory bank's slot axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cc
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

from codir_jax import compile_cache as cache_lib

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Logical axis name -> mesh axis (None = replicated).
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("bank", DATA_AXIS),
    ("seq", None),
    ("embed", None),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("kv", None),
    ("vocab", MODEL_AXIS),
    ("layers", None),
    ("proj", None),
)


def make_mesh(
    axes: Sequence[tuple[str, int]], devices: Sequence[Any] | None = None
) -> Mesh:
  """Builds a mesh from `(name, size)` pairs; one size may be -1.

  Args:
    axes: e.g. `[("data", -1), ("model", 2)]`.
    devices: the devices to use (default: all of `jax.devices()`).

  Returns:
    A `Mesh` with `Auto` axis types (explicit sharding makes the embedding
    gather on batch-sharded ids fail, see ECOSYSTEM.md).
  """
  devices = list(jax.devices() if devices is None else devices)
  names = tuple(str(n) for n, _ in axes)
  sizes = [int(s) for _, s in axes]
  if len(set(names)) != len(names):
    raise ValueError(f"config.mesh repeats an axis name: {names}")
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh may have at most one -1 size: {axes}")
  known = math.prod(s for s in sizes if s != -1)
  if known <= 0 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh sizes must be positive or -1: {axes}")
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(
          f"config.mesh {axes}: {len(devices)} devices do not divide by"
          f" the fixed axes' product {known}"
      )
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(
        f"config.mesh {dict(zip(names, sizes))} needs {math.prod(sizes)}"
        f" devices, but {len(devices)} are available"
    )
  grid = np.asarray(devices, dtype=object).reshape(sizes)
  return Mesh(
      grid, names, axis_types=(jax.sharding.AxisType.Auto,) * len(names)
  )


def axis_size(mesh: Mesh, axis: str) -> int:
  """Size of `axis` in `mesh` (1 when the mesh has no such axis)."""
  return int(mesh.shape.get(axis, 1))


def check_batch_divisible(
    batch_size: int, mesh: Mesh, key: str = "config.optim.batch_size"
) -> None:
  """Raises if the global batch cannot be split evenly over `data`."""
  n = axis_size(mesh, DATA_AXIS)
  if batch_size % n:
    procs = len({d.process_index for d in mesh.devices.flat})
    raise ValueError(
        f"global batch size {batch_size} ({key}) is not divisible by the"
        f" {n} devices of the mesh's '{DATA_AXIS}' axis (mesh"
        f" {dict(mesh.shape)} over {procs} process(es), {mesh.size} devices)"
    )


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading axis over `data`, everything else replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def logical_to_spec(
    logical: Sequence[str | None] | None,
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, str | None],
) -> P:
  """Maps logical axis names of one array to a `PartitionSpec` on `mesh`.

  Unknown logical names raise; a dimension that is not divisible by its
  mesh axis, or whose mesh axis is absent or already used, is replicated.
  """
  if not logical:
    return P()
  if len(logical) != len(shape):
    raise ValueError(
        f"logical axes {tuple(logical)} do not match shape {tuple(shape)}"
    )
  out, used = [], set()
  for name, dim in zip(logical, shape):
    if name is None:
      out.append(None)
      continue
    if name not in rules:
      raise ValueError(
          f"logical axis {name!r} has no entry in config.sharding_rules"
          f" (known: {sorted(rules)})"
      )
    axis = rules[name]
    if (
        axis is None
        or axis not in mesh.shape
        or axis in used
        or dim % mesh.shape[axis]
    ):
      out.append(None)
    else:
      out.append(axis)
      used.add(axis)
  return P(*out)


def fsdp_spec(
    spec: P, shape: Sequence[int], mesh: Mesh, axis: str = DATA_AXIS
) -> P:
  """`spec` with `axis` added on one more dimension (FSDP-style).

  The largest free dimension that divides by the axis size gets `axis`
  (the first of equal ones); free = not sharded by `spec`, or only over
  mesh axes of size 1 (the 'model' axis of a data-only run), whose names
  `axis` replaces. `spec` comes back unchanged when it already uses
  `axis`, the axis has size 1, or no free dimension divides. Each device
  then holds 1/size of the array; XLA gathers it where a jitted function
  uses it.
  """
  n = axis_size(mesh, axis)
  parts = list(spec) + [None] * (len(shape) - len(spec))
  if n == 1 or axis in parts:
    return spec

  def is_free(part) -> bool:
    names = part if isinstance(part, tuple) else (part,)
    return all(a is None or axis_size(mesh, a) == 1 for a in names)

  free = [i for i, d in enumerate(shape) if is_free(parts[i]) and d % n == 0]
  if not free:
    return spec
  parts[max(free, key=lambda i: (shape[i], -i))] = axis
  return P(*parts)


def to_shardings(mesh: Mesh, specs: Any) -> Any:
  """Wraps every PartitionSpec leaf of `specs` in a NamedSharding."""
  return jax.tree.map(
      lambda s: NamedSharding(mesh, s),
      specs,
      is_leaf=lambda x: isinstance(x, P),
  )


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
  """Host batch (this process's rows) -> global arrays sharded on 'data'."""
  shard = batch_sharding(mesh)
  return {
      k: jax.make_array_from_process_local_data(shard, np.asarray(v))
      for k, v in batch.items()
  }


def configure_jax(
    *, compile_cache: bool = False, compile_cache_dir: str = ""
) -> None:
  """The JAX flags every run sets (the only place that sets them).

  Random bits that do not depend on the device layout, so a run gives the
  same numbers on 1 device and on a mesh (the default in current JAX; set
  explicitly so an older default or a user's override cannot change it).

  The persistent compilation cache (`config.compile_cache`): on, every
  compiled program is stored in and loaded from
  `compile_cache.resolve_dir(compile_cache_dir, <JAX's current dir>)`,
  however short its compile; off, every program is compiled anew.

  Args:
    compile_cache: turn the persistent cache on (False: off).
    compile_cache_dir: its directory ('' = the one JAX already uses, else
      `compile_cache.default_dir()`).
  """
  jax.config.update("jax_threefry_partitionable", True)
  before = (
      jax.config.jax_enable_compilation_cache,
      jax.config.jax_compilation_cache_dir,
  )
  if compile_cache:
    path = cache_lib.resolve_dir(compile_cache_dir, before[1])
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_enable_compilation_cache", bool(compile_cache))
  after = (
      jax.config.jax_enable_compilation_cache,
      jax.config.jax_compilation_cache_dir,
  )
  if after != before:
    # JAX opens the cache once per process; a new setting needs a reset.
    jax_cc.reset_cache()
