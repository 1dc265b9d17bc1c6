"""Drawing negatives from a (sharded) memory bank: the sampler.

The rule and its cost are in the `memory_bank` module docstring
("Sampling"); `sampling.draw_ranks` draws the ranks. `sample_negatives` is
re-exported by `memory_bank` (the bank's public API) and `sample_local` is
what `bank_losses` scores from, shard by shard.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from codir_jax.losses import contrastive
from codir_jax.losses import sampling
from codir_jax.losses import shard_dispatch

# Released code: K = 100 negatives per example.
DEFAULT_NUM_NEGATIVES = 100


def sample_local(
    lab,
    val,
    rng,
    query_ids,
    query_labels,
    *,
    axis,
    num_negatives,
    label_aware,
    label_gap,
):
  """Draws K global ranks; returns the locally owned draws.

  Returns: local_slot [B, K] int32, own [B, K] bool, total [B] int32 (|E_i|).
  """
  n_local = val.shape[0]
  b = query_ids.shape[0]
  slot_ids = shard_dispatch.offset(n_local, axis) + jnp.arange(n_local)
  elig = val[None, :] & (slot_ids[None, :] != query_ids[:, None])  # [B, N_loc]
  if label_aware:
    elig = elig & contrastive.label_eligible(
        query_labels, lab, label_gap=label_gap
    )
  cum = jnp.cumsum(elig, axis=1, dtype=jnp.int32)  # [B, N_loc]
  e_local = cum[:, -1]  # [B]
  total = shard_dispatch.psum(e_local, axis)  # [B]
  if axis is None:
    before = jnp.zeros_like(e_local)
  else:
    counts = jax.lax.all_gather(e_local, axis)  # [n, B]
    d = jax.lax.axis_index(axis)
    before = jnp.sum(
        jnp.where(jnp.arange(counts.shape[0])[:, None] < d, counts, 0), axis=0
    )
  n_total = n_local * (1 if axis is None else jax.lax.axis_size(axis))
  u = sampling.draw_ranks(
      rng, pool=total, num=num_negatives, max_pool=n_total
  )  # [B, K] global ranks
  r = u - before[:, None]  # local rank, [B, K]
  own = (r >= 0) & (r < e_local[:, None]) & (total[:, None] > 0)
  # The (r+1)-th eligible local slot: first j with cum[j] > r.
  slot = jax.vmap(lambda c, x: jnp.searchsorted(c, x, side="right"))(
      cum, jnp.clip(r, 0, None)
  )
  slot = jnp.clip(slot, 0, n_local - 1).astype(jnp.int32)
  return slot, own, total


def check_queries(query_ids, query_labels, label_aware):
  if query_ids.ndim != 1:
    raise ValueError(f"query_ids must be [B], got {query_ids.shape}")
  if label_aware and (
      query_labels is None or query_labels.shape != query_ids.shape
  ):
    raise ValueError("label_aware sampling needs query_labels [B]")
  if query_labels is None:
    query_labels = jnp.zeros(query_ids.shape, jnp.int32)
  return jnp.asarray(query_ids, jnp.int32), query_labels


def sample_negatives(
    bank: Any,
    *,
    rng: jax.Array,
    query_ids: jax.Array,
    query_labels: jax.Array | None = None,
    num_negatives: int = DEFAULT_NUM_NEGATIVES,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> tuple[jax.Array, jax.Array]:
  """K slots per query, uniform over the eligible slots (see sampling.py).

  Eligible for query i: valid, != query_ids[i], and (label_aware) a
  different label (|diff| > label_gap for regression). See module docstring.
  Default label_aware=True: fine-tuning (paper and released code).
  Pre-training queues: label_aware=False, query_ids = -1.

  Args:
    bank: the `memory_bank.MemoryBank` (its labels and valid flags).
    rng: PRNG key (replicated; the draw does not depend on the mesh).
    query_ids: [B] int slot of each query itself (-1: none).
    query_labels: [B] labels (needed when label_aware).
    num_negatives: K (100 in the released code).
    label_aware, label_gap: the label rule.
    mesh, axis: shard the slot axis over `axis` of `mesh`; None = 1 device.

  Returns:
    (ids [B, K] int32 global slots, mask [B, K] bool). mask is False for
    every draw of a query without any eligible slot (its ids are then 0).
  """
  query_ids, query_labels = check_queries(query_ids, query_labels, label_aware)

  def fn(lab, val, rng, qid, qlab, *, axis):
    slot, own, total = sample_local(
        lab,
        val,
        rng,
        qid,
        qlab,
        axis=axis,
        num_negatives=num_negatives,
        label_aware=label_aware,
        label_gap=label_gap,
    )
    ids = jnp.where(own, slot + shard_dispatch.offset(val.shape[0], axis), 0)
    return shard_dispatch.psum(ids, axis), jnp.broadcast_to(
        total[:, None] > 0, ids.shape
    )

  return shard_dispatch.run_sharded(
      fn,
      mesh=mesh,
      axis=axis,
      bank_args=(bank.labels, bank.valid),
      other_args=(rng, query_ids, query_labels),
      out_specs=("rep", "rep"),
  )
