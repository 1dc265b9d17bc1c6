"""One dispatcher for the bank's shard_map calls, and its shard helpers.

Every bank operation (`memory_bank` writes, reads and sampling;
`bank_losses` scoring) is a shard-local function `fn(*bank_args,
*other_args, axis=...)`: the bank arrays arrive slot-sharded over `axis`,
everything else replicated. `run_sharded` runs it through `jax.shard_map`
on a mesh, or directly with `axis=None` on one device (the same code path,
collectives skipped by the helpers below).
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import PartitionSpec as PS


def offset(n_local, axis):
  """The first global slot of this device's shard (0 unsharded)."""
  return 0 if axis is None else jax.lax.axis_index(axis) * n_local


def psum(x, axis):
  return x if axis is None else jax.lax.psum(x, axis)


def pmax(x, axis):
  return x if axis is None else jax.lax.pmax(x, axis)


def run_sharded(fn, *, mesh, axis, bank_args, other_args, out_specs):
  """Calls fn(*bank_args, *other_args, axis=...) unsharded or via shard_map.

  bank_args are slot-sharded ([N, ...] over `axis`); other_args replicated.
  out_specs: pytree of "bank" / "rep" strings mirroring fn's output.
  """
  if mesh is None:
    return fn(*bank_args, *other_args, axis=None)
  if mesh.shape[axis] and bank_args[0].shape[0] % mesh.shape[axis]:
    raise ValueError(
        f"bank size {bank_args[0].shape[0]} not divisible by {mesh.shape[axis]}"
    )
  to_spec = lambda s: PS(axis) if s == "bank" else PS()
  in_specs = tuple(PS(axis) for _ in bank_args) + tuple(
      jax.tree.map(lambda _: PS(), a) for a in other_args
  )
  return jax.shard_map(
      functools.partial(fn, axis=axis),
      mesh=mesh,
      in_specs=in_specs,
      out_specs=jax.tree.map(to_spec, out_specs),
  )(*bank_args, *other_args)
