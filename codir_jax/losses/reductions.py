"""Masked (sum, count) reductions of per-example losses.

Every loss in `codir_jax.losses` returns unreduced per-example values. This
module turns them into `(sum, count)` pairs (STYLE.md sec. 5; scenic
`weighted_unnormalized_*`, clu `Average`), so that sums and counts can be
psum-ed across devices and steps and divided only at logging time.

Convention: `mask` is boolean and `True` = keep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_sum_count(
    values: jax.Array, *, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
  """Sum and count of the kept entries.

  sum = sum_i [mask_i] values_i,  count = sum_i [mask_i].

  Masked entries are replaced by 0 with `jnp.where` *before* summing, so a
  NaN/inf in a padded row can neither reach the sum nor its gradient.

  Args:
    values: [B, ...] per-example values (any float dtype; summed in float32).
    mask: [B, ...] bool broadcastable to `values` (True = keep); None keeps
      everything.

  Returns:
    (sum, count): two float32 scalars.
  """
  values = jnp.asarray(values)
  values = values.astype(jnp.promote_types(values.dtype, jnp.float32))
  if mask is None:
    return jnp.sum(values), jnp.asarray(values.size, jnp.float32)
  mask = jnp.broadcast_to(jnp.asarray(mask, bool), values.shape)
  total = jnp.sum(jnp.where(mask, values, 0.0))
  count = jnp.sum(mask.astype(jnp.float32))
  return total, count


def masked_mean(
    values: jax.Array, *, mask: jax.Array | None = None
) -> jax.Array:
  """mean = sum / max(count, 1) of the kept entries (0 when nothing is kept).

  Args:
    values: [B, ...] per-example values.
    mask: [B, ...] bool (True = keep) or None.

  Returns:
    A float32 scalar.
  """
  total, count = masked_sum_count(values, mask=mask)
  return total / jnp.maximum(count, 1.0)
