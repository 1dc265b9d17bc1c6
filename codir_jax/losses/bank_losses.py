"""Contrastive losses against a (sharded) memory bank, shard-locally.

The bank's state, its writes and the negative sampler are in
`memory_bank.py`; these functions draw K negatives per query with that
sampler and score them on the device that holds them, without ever
gathering the bank. All three share one dispatcher (`_score_bank`): checks,
the sampled local scores, then a per-loss combination of them.

Scoring. Each device scores the draws it owns. With few draws per slot
(K * SCORE_ALL_RATIO < N/n, e.g. the released K = 100) it gathers the drawn
rows ([B, K, P] float32, B*K*P*4 bytes of traffic). With many (K >= N/n /
SCORE_ALL_RATIO, e.g. K = 16k, N = 64k) it scores all its slots with one
[B, P] x [P, N/n] matmul (2*B*N/n*P flops, the same again for the query
gradient) and takes the drawn scores, which avoids the [B, K, P] copy: at
B = 8, K = 16k that copy is 64 MB per direction. Both give the same
float32 dot products up to summation order.

Loss combination (`bank_info_nce`). Queries and positives are replicated
(all-gathered from the batch sharding); every device scores only the
negatives it owns, and the log-sum-exp is combined with a pmax of the local
maxima (stop-gradient shift) and a psum of the shifted exp-sums. NCE sums
its per-negative terms locally and psums them. The bank is never gathered.

Bytes communicated per step and device (payload received per device with
ring collectives; n = devices on `axis`, s = bytes per element of the query
dtype, B global batch, P projection size, K negatives per query), for one
call of `bank_info_nce` (one direction, one bank):
  forward:  2*B*P*s*(n-1)/n      all-gather of queries and positives (they
                                 arrive batch-sharded; 0 if replicated)
          + 4*B*(n-1)            all-gather of the eligible counts [n, B] int32
          + 3 * 2*4*B*(n-1)/n    all-reduces of [B]: total count, pmax, psum
  backward: 2*4*B*P*(n-1)/n      all-reduce of the f32 query cotangent
  total  ~= (n-1)/n * (2*s + 8)*B*P + 4*B*(n-1) + 24*B*(n-1)/n
(verified against the compiled HLO: exactly these six collectives). K and N
do not appear: the naive designs move B*K*P*s (gathering the negatives) or
N*P*4 (gathering the bank) instead. `bank_crd_nce` is the same without the
pmax; `bank_crd_log_z` adds two scalar all-reduces.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from codir_jax.losses import bank_sampling
from codir_jax.losses import contrastive
from codir_jax.losses import memory_bank
from codir_jax.losses import representations
from codir_jax.losses import shard_dispatch
from codir_jax.losses.memory_bank import MemoryBank

# Score the whole local shard by matmul when K * ratio >= N/n (module doc).
SCORE_ALL_RATIO = 4


def _local_logits(
    vec,
    lab,
    val,
    queries,
    positives,
    rng,
    qid,
    qlab,
    *,
    axis,
    num_negatives,
    temperature,
    label_aware,
    label_gap,
):
  """(pos [B], neg [B, K], own [B, K], total [B]) of the local draws."""
  slot, own, total = bank_sampling.sample_local(
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
  q = representations.upcast(queries)
  vec = jax.lax.stop_gradient(vec)
  if num_negatives * SCORE_ALL_RATIO >= vec.shape[0]:
    # Many draws per slot: score every local slot with one matmul and pick
    # the drawn scores; no [B, K, P] copy of the negatives (see module doc).
    scores = jnp.einsum("bp,np->bn", q, vec)  # [B, N_loc]
    neg = jnp.where(own, jnp.take_along_axis(scores, slot, axis=1), 0.0)
  else:
    negs = jnp.where(own[..., None], vec[slot], 0.0)  # [B, K, P]
    neg = jnp.einsum("bp,bkp->bk", q, negs)
  neg = neg / temperature  # [B, K]
  pos = jnp.sum(q * representations.upcast(positives), axis=-1) / temperature
  return pos, neg, own, total


def _score_bank(
    combine,
    *,
    queries,
    positives,
    bank,
    rng,
    query_ids,
    query_labels,
    num_negatives,
    temperature,
    label_aware,
    label_gap,
    mesh,
    axis,
    extra=(),
):
  """Checks, then `combine(pos, neg, own, total, *extra, axis=)` per shard.

  `extra` are replicated arrays passed through to `combine`; the result is
  replicated.
  """
  if (
      queries.shape != positives.shape
      or queries.shape[1] != bank.vectors.shape[1]
  ):
    raise ValueError(
        f"queries {queries.shape}, positives {positives.shape},"
        f" bank {bank.vectors.shape}"
    )
  query_ids, query_labels = bank_sampling.check_queries(
      query_ids, query_labels, label_aware
  )

  def fn(vec, lab, val, queries, positives, rng, qid, qlab, *more, axis):
    pos, neg, own, total = _local_logits(
        vec,
        lab,
        val,
        queries,
        positives,
        rng,
        qid,
        qlab,
        axis=axis,
        num_negatives=num_negatives,
        temperature=temperature,
        label_aware=label_aware,
        label_gap=label_gap,
    )
    return combine(pos, neg, own, total, *more, axis=axis)

  return shard_dispatch.run_sharded(
      fn,
      mesh=mesh,
      axis=axis,
      bank_args=(bank.vectors, bank.labels, bank.valid),
      other_args=(queries, positives, rng, query_ids, query_labels, *extra),
      out_specs="rep",
  )


def bank_info_nce(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    query_labels: jax.Array | None = None,
    num_negatives: int = memory_bank.DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """InfoNCE against K negatives sampled from a (sharded) bank (paper default).

  loss_i = logsumexp([l_i+, l_i1..l_iK]) - l_i+,  l_i+ = <q_i, p_i>/tau,
  l_ik = <q_i, M[n_ik]>/tau, n_ik ~ U(E_i) as in
  `memory_bank.sample_negatives`. Equals `contrastive.info_nce(queries,
  positives, bank.vectors[ids], negatives_mask=mask)` with `ids, mask =
  sample_negatives(...)` with the same rng, without ever gathering the bank.

  Args:
    queries: [B, P] anchors (e.g. z_s for the student direction against M_t).
    positives: [B, P] (z_t, paper; or `read(M_t, ids)`, released code).
    bank: the other side's bank (gradients are not propagated into it).
    rng: PRNG key; query_ids [B]; query_labels [B]; see `sample_negatives`.
    num_negatives: K; temperature: tau (0.07).
    mesh, axis: shard the slot axis over `axis` of `mesh`; None = 1 device.

  Returns:
    [B] float32 (0 for a query without eligible slots), replicated.
  """

  def combine(pos, neg, own, total, *, axis):
    del total
    neg = jnp.where(own, neg, -jnp.inf)
    m_local = jax.lax.stop_gradient(jnp.max(neg, axis=-1, initial=-jnp.inf))
    m = jnp.maximum(
        jax.lax.stop_gradient(pos), shard_dispatch.pmax(m_local, axis)
    )  # [B]
    s = shard_dispatch.psum(
        jnp.sum(jnp.exp(neg - m[:, None]), axis=-1), axis
    )  # [B]
    return jnp.log(jnp.exp(pos - m) + s) + m - pos

  return _score_bank(
      combine,
      queries=queries,
      positives=positives,
      bank=bank,
      rng=rng,
      query_ids=query_ids,
      query_labels=query_labels,
      num_negatives=num_negatives,
      temperature=temperature,
      label_aware=label_aware,
      label_gap=label_gap,
      mesh=mesh,
      axis=axis,
  )


def bank_crd_nce(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    log_z: jax.Array | float,
    num_data: int,
    query_labels: jax.Array | None = None,
    num_negatives: int = memory_bank.DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    eps: float = contrastive.CRD_EPS,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """CRD NCE (released code, CRD Eq. 18) against bank negatives, shard-local.

  Same sampling as `bank_info_nce`; equation in
  `contrastive.crd_nce_from_logits` with K_i = K (0 for a query without
  eligible slots). `log_z` comes from `bank_crd_log_z` on the first batch
  (state of the train step, one per direction); `num_data` = N real examples.

  Returns:
    [B] float32, replicated.
  """

  def combine(pos, neg, own, total, *, axis):
    k_i = jnp.where(total > 0, float(num_negatives), 0.0)
    pos_term, neg_terms = contrastive.crd_nce_terms(
        positive_logits=pos,
        negative_logits=neg,
        negatives_mask=own,
        num_valid_negatives=k_i,
        log_z=log_z,
        num_data=num_data,
        eps=eps,
    )
    return -(pos_term + shard_dispatch.psum(jnp.sum(neg_terms, axis=-1), axis))

  return _score_bank(
      combine,
      queries=queries,
      positives=positives,
      bank=bank,
      rng=rng,
      query_ids=query_ids,
      query_labels=query_labels,
      num_negatives=num_negatives,
      temperature=temperature,
      label_aware=label_aware,
      label_gap=label_gap,
      mesh=mesh,
      axis=axis,
  )


def bank_crd_log_z(
    *,
    queries: jax.Array,
    positives: jax.Array,
    bank: MemoryBank,
    rng: jax.Array,
    query_ids: jax.Array,
    num_data: int,
    query_labels: jax.Array | None = None,
    valid: jax.Array | None = None,
    num_negatives: int = memory_bank.DEFAULT_NUM_NEGATIVES,
    temperature: float = contrastive.DEFAULT_TEMPERATURE,
    label_aware: bool = True,
    label_gap: float | None = None,
    mesh=None,
    axis: str = "data",
) -> jax.Array:
  """log Z = log(mean over the batch's [B, 1+K] exp(l) * N) (CRD, first batch).

  Same sampling as `bank_crd_nce` (use the same rng on the first step so Z
  is computed from the scores that step uses, as in CRD).

  Args:
    valid: [B] bool rows to include (padding rows excluded) or None.

  Returns:
    scalar float32, stop-gradient-ed.
  """
  rows = (
      jnp.ones((queries.shape[0],), bool)
      if valid is None
      else jnp.asarray(valid, bool)
  )
  # Z is a constant (CRD freezes it): no tangents reach the pmax below, so
  # this also works inside jax.grad.
  queries = jax.lax.stop_gradient(queries)
  positives = jax.lax.stop_gradient(positives)

  def combine(pos, neg, own, total, rows, *, axis):
    del total
    own = own & rows[:, None]
    neg = jnp.where(own, neg, -jnp.inf)
    pos = jnp.where(rows, pos, -jnp.inf)
    m = jnp.maximum(jnp.max(pos), shard_dispatch.pmax(jnp.max(neg), axis))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jnp.sum(jnp.exp(pos - m)) + shard_dispatch.psum(
        jnp.sum(jnp.exp(neg - m)), axis
    )
    count = jnp.sum(rows, dtype=jnp.float32) + shard_dispatch.psum(
        jnp.sum(own, dtype=jnp.float32), axis
    )
    return (
        jnp.log(s)
        + m
        - jnp.log(jnp.maximum(count, 1.0))
        + jnp.log(float(num_data))
    )

  out = _score_bank(
      combine,
      queries=queries,
      positives=positives,
      bank=bank,
      rng=rng,
      query_ids=query_ids,
      query_labels=query_labels,
      num_negatives=num_negatives,
      temperature=temperature,
      label_aware=label_aware,
      label_gap=label_gap,
      mesh=mesh,
      axis=axis,
      extra=(rows,),
  )
  return jax.lax.stop_gradient(out)
