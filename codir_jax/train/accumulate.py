"""Gradient accumulation over micro-batches, inside the one jitted step.

`optim.grad_accum_steps = A` > 1 splits the global batch of B rows into A
micro-batches of B / A rows and runs them one after another in a
`lax.scan`: activations are held for one micro-batch at a time; gradients
and `(sum, count)` metrics are summed over the micro-batches, and the
optimizer updates once, after the last one.

Which rows form micro-batch a: the global batch is laid out over the
mesh's data axis as n contiguous blocks of B / n rows (one per data shard);
micro-batch a takes the a-th slice of B / (n A) rows from every block. So
each micro-batch is spread evenly over the data axis and no row moves
between devices (with n = 1 it is rows a B/A .. (a+1) B/A - 1). B must
divide by n A.

What equals one step on the whole batch (see `step.py` for the keys):
- Every term is normalised by its count over the WHOLE batch (valid rows,
  or masked tokens in CoDIR-Pre), known before any forward pass, so
  padding rows spread unevenly over micro-batches weigh nothing:
  L = sum_a sum_term w * sum_a,term / count_term. Task, KD and PKD terms
  (and the released lambda / B scaling) then give the single large batch's
  loss and gradient, up to float summation order, when dropout is off.
  With dropout, micro-batch a draws its masks from its own key, so they
  differ from the large batch's (same distribution, other draws).
- The contrastive term does not: micro-batch a reads the memory bank
  (negatives, released-code positives) as written by micro-batches < a of
  the same step, then writes its own rows; in-batch negatives come from
  its own micro-batch only; CRD NCE's normaliser Z is set by the first
  micro-batch of the first step. The result equals running the A
  micro-batches as A plain steps in order (micro-batch a with the step key
  fold_in(fold_in(rng, step), a)) whose parameters are all those of the
  step's start, then applying the count-weighted sum of their gradients
  once.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from codir_jax import sharding


def check_split(batch_size: int, num: int, mesh: Any) -> int:
  """Raises unless `num` micro-batches split evenly over 'data'; -> n."""
  n = 1 if mesh is None else sharding.axis_size(mesh, sharding.DATA_AXIS)
  if batch_size % (n * num):
    raise ValueError(
        f"config.optim.batch_size = {batch_size} does not split into"
        f" config.optim.grad_accum_steps = {num} micro-batches spread"
        f" evenly over the {n} devices of the mesh's"
        f" '{sharding.DATA_AXIS}' axis: it must divide by {n * num}"
    )
  return n


def split(batch: dict[str, jax.Array], num: int, mesh: Any) -> dict:
  """Global batch -> leaves [num, B / num, ...], micro-batch first."""
  rows = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(rows) != 1:
    raise ValueError(f"batch leaves have different row counts: {rows}")
  n = check_split(rows.pop(), num, mesh)

  def one(x):
    b = x.shape[0]
    x = x.reshape(n, num, b // (n * num), *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1).reshape(num, b // num, *x.shape[3:])
    if mesh is None:
      return x
    spec = P(None, sharding.DATA_AXIS)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

  return jax.tree.map(one, batch)


def run(
    fn: Callable[[dict, jax.Array, Any], tuple[Any, Any, Any]],
    batch: dict[str, jax.Array],
    carry: Any,
    *,
    num: int,
    mesh: Any,
) -> tuple[Any, Any, Any]:
  """Sums `fn` over the micro-batches of `batch`, threading `carry`.

  Args:
    fn: (micro-batch, index a, carry) -> (grads, metrics, new carry).
    batch: the global batch.
    carry: state read and written in micro-batch order (the bank).
    num: number of micro-batches A.
    mesh: the mesh (None = one device).

  Returns:
    (sum of grads, sum of metrics, carry after the last micro-batch).
  """
  micro = split(batch, num, mesh)
  first = jax.tree.map(lambda x: x[0], micro)
  shapes = jax.eval_shape(fn, first, jnp.zeros((), jnp.int32), carry)[:2]
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

  def body(state, xs):
    sums, c = state
    g, m, c = fn(*xs, c)
    return (jax.tree.map(jnp.add, sums, (g, m)), c), None

  xs = (micro, jnp.arange(num, dtype=jnp.int32))
  ((grads, metrics), carry), _ = jax.lax.scan(body, (zeros, carry), xs)
  return grads, metrics, carry
