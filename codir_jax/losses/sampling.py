"""Uniform draws of negative ranks: without replacement when the pool allows.

METHOD.md ("Memory bank"): each query draws K negatives uniformly from its
eligible pool E_i, with replacement only if K exceeds the pool. The bank
sampler (`memory_bank.sample_negatives`) works on ranks: a draw r in
{0, .., |E_i| - 1} names the (r+1)-th eligible slot in global slot order.
This module draws those ranks, per row:

  |E_i| >= K: a uniformly random K-subset of {0, .., |E_i| - 1} (all K
              ranks distinct; every subset equally likely);
  |E_i| <  K: K independent uniform ranks (with replacement; the released
              code's `np.random.choice(..., replace=True)` case);
  |E_i| =  0: zeros (the caller masks them).

The released code decides once for the whole run (`replace = K >= min class
pool`); codir_jax decides per row, which is what METHOD.md describes and
differs only when one class's pool is below K and another's is not.

Two exact subset samplers, chosen statically by cost (same distribution):
  * Floyd's algorithm (Bentley & Floyd, CACM 1987): for s = 0..K-1 with
    j_s = |E_i| - K + s, draw t ~ U{0..j_s}; take t unless it was already
    taken, else take j_s. B*K^2 integer comparisons; used while
    K^2 <= FLOYD_COST_RATIO * N (e.g. K = 100, any N).
  * Random keys: u ~ U(0, 1) for each rank < |E_i| ([B, N] keys), keep the
    K smallest (`lax.top_k`). B*N keys and a top-K; used for large K
    (e.g. K = 16k, N = 64k), where K^2 comparisons would dominate the step.

The draws depend only on (rng, |E_i|, K, N): the same on 1 and n devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Floyd while K^2 <= ratio * N (both cost about the same near the boundary).
FLOYD_COST_RATIO = 8


def _floyd(rng: jax.Array, pool: jax.Array, k: int) -> jax.Array:
  """K distinct ranks per row (rows with pool >= k); see module docstring."""
  b = pool.shape[0]
  top = pool[:, None] - k + jnp.arange(k, dtype=jnp.int32)[None, :]  # [B, K]
  t = jax.random.randint(rng, (b, k), 0, jnp.maximum(top + 1, 1))  # [B, K]
  slots = jnp.arange(k, dtype=jnp.int32)

  def body(s, picks):
    cand = t[:, s]  # [B]
    taken = jnp.any((picks == cand[:, None]) & (slots < s)[None, :], axis=1)
    return picks.at[:, s].set(jnp.where(taken, top[:, s], cand))

  return jax.lax.fori_loop(0, k, body, jnp.zeros((b, k), jnp.int32))


def _random_keys(
    rng: jax.Array, pool: jax.Array, k: int, max_pool: int
) -> jax.Array:
  """The K ranks with the smallest uniform keys among ranks < pool."""
  # One key per row, 1-D draws: with threefry_partitionable the first m
  # keys do not depend on N, so a bank padded for n devices draws the same.
  row_keys = jax.random.split(rng, pool.shape[0])
  keys = jax.vmap(lambda r: jax.random.uniform(r, (max_pool,)))(row_keys)
  ranks = jnp.arange(max_pool, dtype=jnp.int32)
  keys = jnp.where(ranks[None, :] < pool[:, None], keys, 2.0)
  _, picks = jax.lax.top_k(-keys, k)  # [B, K]
  return picks.astype(jnp.int32)


def draw_ranks(
    rng: jax.Array, *, pool: jax.Array, num: int, max_pool: int
) -> jax.Array:
  """K ranks per row, distinct where the pool allows (module docstring).

  Args:
    rng: PRNG key (replicated; the result depends only on it and `pool`).
    pool: [B] int32 pool sizes |E_i| (0 <= pool <= max_pool).
    num: K, draws per row.
    max_pool: N, a static upper bound of `pool` (the bank's slot count).

  Returns:
    [B, K] int32 ranks in [0, max(pool_i, 1)).
  """
  pool = jnp.asarray(pool, jnp.int32)
  key_subset, key_repl = jax.random.split(rng)
  if num * num <= FLOYD_COST_RATIO * max_pool:
    subset = _floyd(key_subset, pool, num)
  else:
    subset = _random_keys(key_subset, pool, num, max(max_pool, num))
  repl = jax.random.randint(
      key_repl, (pool.shape[0], num), 0, jnp.maximum(pool, 1)[:, None]
  )
  return jnp.where((pool >= num)[:, None], subset, repl)
