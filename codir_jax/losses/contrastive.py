"""Contrastive losses on projected representations (CoDIR, Sec. 3).

All functions take vectors that the caller has already projected and
L2-normalised (`representations.codir_representation`), score them with the
dot product s(a, b) = <a, b> / tau, and return one loss per anchor [B].

Defaults (METHOD.md, "Contrastive objective"):
  * InfoNCE is the paper's loss (default); CRD NCE (Eq. 18 of CRD, copied by
    the released code intersun/CoDIR) is the variant.
  * tau = 0.07 (paper and released code).
  * CoDIR is symmetric (L_crd = (L_s + L_t) / 2, one call per direction);
    the train step makes both calls.

Masked negatives contribute nothing: `info_nce(..., negatives_mask=m)` equals
`info_nce` on the negatives with the masked ones removed (tested).

A row with NO valid negative: InfoNCE becomes a softmax over the positive
alone, so its loss is exactly 0 with zero gradient (and CRD NCE reduces to
its positive term with K_i = 0, which is ~0 as well). The row is NOT
excluded from any mean by these functions; to exclude it, add
`negatives_mask.any(-1)` to the reduction mask (`reductions.masked_sum_count`).

Numerics: float32 inside whatever the input dtype; the log-sum-exp is
max-subtracted; masked logits are replaced by -inf (and masked vectors by 0)
with `jnp.where` *before* any exp/product, so garbage or NaN in masked slots
cannot leak into values or gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from codir_jax.losses import representations

# Paper Sec. 4 / released code: tau = 0.07.
DEFAULT_TEMPERATURE = 0.07
# CRD's ContrastLoss adds eps = 1e-7 to the NCE denominators (released code).
CRD_EPS = 1e-7


def _f32(x):
  return representations.upcast(x)


def info_nce_from_logits(
    *,
    positive_logits: jax.Array,
    negative_logits: jax.Array,
    negatives_mask: jax.Array | None = None,
) -> jax.Array:
  """InfoNCE from precomputed logits.

  loss_i = -log( exp(l_i+) / (exp(l_i+) + sum_k [m_ik] exp(l_ik)) )

  Args:
    positive_logits: [B] logits of the positives (already divided by tau).
    negative_logits: [B, K] logits of the negatives.
    negatives_mask: [B, K] bool, True = valid negative; None = all valid.

  Returns:
    [B] float32 per-example losses (0 for a row with no valid negative).
  """
  pos = _f32(positive_logits)
  neg = _f32(negative_logits)
  if pos.ndim != 1 or neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
    raise ValueError(f"expected [B] and [B,K], got {pos.shape}, {neg.shape}")
  if negatives_mask is not None:
    neg = jnp.where(negatives_mask, neg, -jnp.inf)  # [B, K]
  m = jax.lax.stop_gradient(
      jnp.maximum(pos, jnp.max(neg, axis=-1, initial=-jnp.inf))
  )
  total = jnp.exp(pos - m) + jnp.sum(jnp.exp(neg - m[:, None]), axis=-1)  # [B]
  return jnp.log(total) + m - pos


def info_nce(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    negatives_mask: jax.Array | None = None,
) -> jax.Array:
  """InfoNCE with explicit negatives (paper Sec. 3, default loss).

  l_i+  = <a_i, p_i> / tau,  l_ik = <a_i, n_ik> / tau
  loss_i = logsumexp([l_i+, {l_ik : m_ik}]) - l_i+

  Args:
    anchors: [B, P] (e.g. student vectors z_s).
    positives: [B, P] (teacher vectors z_t, or bank entries M_t[i]).
    negatives: [B, K, P] (bank entries M_t[negs]).
    temperature: tau (> 0); 0.07 in paper and released code.
    negatives_mask: [B, K] bool, True = valid; None = all valid.

  Returns:
    [B] float32 per-example losses.
  """
  a, p, n = _f32(anchors), _f32(positives), _f32(negatives)
  if (
      a.shape != p.shape
      or n.ndim != 3
      or n.shape[0] != a.shape[0]
      or n.shape[2] != a.shape[1]
  ):
    raise ValueError(
        f"expected [B,P],[B,P],[B,K,P], got {a.shape},{p.shape},{n.shape}"
    )
  if negatives_mask is not None:
    if negatives_mask.shape != n.shape[:2]:
      raise ValueError(
          f"negatives_mask {negatives_mask.shape} != {n.shape[:2]}"
      )
    n = jnp.where(negatives_mask[..., None], n, 0.0)
  pos = jnp.sum(a * p, axis=-1) / temperature  # [B]
  neg = jnp.einsum("bp,bkp->bk", a, n) / temperature  # [B, K]
  return info_nce_from_logits(
      positive_logits=pos, negative_logits=neg, negatives_mask=negatives_mask
  )


def label_eligible(
    query_labels: jax.Array,
    candidate_labels: jax.Array,
    *,
    label_gap: float | None = None,
) -> jax.Array:
  """Which candidates may serve as negatives of a query, by label.

  Classification (METHOD.md, paper and released code): label_j != y_i.
  Regression (codir_jax rule; the released code breaks on STS-B): with
  `label_gap` set, |label_j - y_i| > label_gap. Float labels without a gap
  raise, because float inequality would accept almost everything.

  Args:
    query_labels: [B].
    candidate_labels: [N] (or [B, N]).
    label_gap: None for class labels; a float for regression scores.

  Returns:
    [B, N] bool.
  """
  q = jnp.asarray(query_labels)[:, None]
  c = jnp.asarray(candidate_labels)
  c = c[None, :] if c.ndim == 1 else c
  if label_gap is None:
    if jnp.issubdtype(q.dtype, jnp.floating) or jnp.issubdtype(
        c.dtype, jnp.floating
    ):
      raise ValueError("float (regression) labels need label_gap")
    return c != q
  return jnp.abs(c.astype(jnp.float32) - q.astype(jnp.float32)) > label_gap


def in_batch_info_nce(
    anchors: jax.Array,
    positives: jax.Array,
    *,
    temperature: float = DEFAULT_TEMPERATURE,
    valid: jax.Array | None = None,
    labels: jax.Array | None = None,
    label_gap: float | None = None,
) -> jax.Array:
  """InfoNCE with in-batch negatives (paper, pre-training; no-bank ablation).

  l_ij = <a_i, p_j> / tau; the positive of row i is j = i; the negatives
  are the other rows j != i with valid_j, and, when `labels` is given,
  label_eligible(y_i, y_j) (same-label rows excluded, fine-tuning rule).

  Args:
    anchors: [B, P]; positives: [B, P].
    temperature: tau.
    valid: [B] bool row validity (False = padding); None = all valid.
    labels: [B] or None (None: no label exclusion, pre-training).
    label_gap: regression rule, see `label_eligible`.

  Returns:
    [B] float32; 0 on invalid rows and on rows with no valid negative.
  """
  a, p = _f32(anchors), _f32(positives)
  if a.ndim != 2 or a.shape != p.shape:
    raise ValueError(f"expected [B,P] twice, got {a.shape}, {p.shape}")
  b = a.shape[0]
  if valid is None:
    valid = jnp.ones((b,), bool)
  valid = jnp.asarray(valid, bool)
  a = jnp.where(valid[:, None], a, 0.0)
  p = jnp.where(valid[:, None], p, 0.0)
  logits = (a @ p.T) / temperature  # [B, B]
  mask = valid[None, :] & ~jnp.eye(b, dtype=bool)  # [B, B]
  if labels is not None:
    mask = mask & label_eligible(labels, labels, label_gap=label_gap)
  loss = info_nce_from_logits(
      positive_logits=jnp.diagonal(logits),
      negative_logits=logits,
      negatives_mask=mask,
  )
  return jnp.where(valid, loss, 0.0)


def crd_nce_from_logits(
    *,
    positive_logits: jax.Array,
    negative_logits: jax.Array,
    log_z: jax.Array | float,
    num_data: int,
    negatives_mask: jax.Array | None = None,
    eps: float = CRD_EPS,
) -> jax.Array:
  """CRD NCE (CRD Eq. 18; released code's loss) from precomputed logits.

  P_ik = exp(l_ik) / Z,  c_i = K_i / N  (K_i = number of valid negatives)
  loss_i = -[ log(P_i0 / (P_i0 + c_i + eps))
              + sum_k [m_ik] log(c_i / (P_ik + c_i + eps)) ]

  Computed in log space: log P = l - log Z, and
  log(P/(P+c')) = -softplus(log c' - log P),
  log(c/(P+c')) = log(c/c') - softplus(log P - log c'),  c' = c + eps.

  Args:
    positive_logits: [B] l_i0 = <a_i, p_i>/tau.
    negative_logits: [B, K] l_ik.
    log_z: scalar log Z (frozen at the first batch, see `crd_log_z`).
    num_data: N, the number of training examples (bank size).
    negatives_mask: [B, K] bool or None; masked negatives are removed,
      including from K_i.
    eps: 1e-7 in CRD.

  Returns:
    [B] float32 per-example losses. (CRD divides the batch sum by B.)
  """
  pos = _f32(positive_logits)
  neg = _f32(negative_logits)
  if pos.ndim != 1 or neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
    raise ValueError(f"expected [B] and [B,K], got {pos.shape}, {neg.shape}")
  if negatives_mask is None:
    negatives_mask = jnp.ones(neg.shape, bool)
  k_i = jnp.sum(negatives_mask, axis=-1, dtype=jnp.float32)  # [B]
  pos_term, neg_terms = crd_nce_terms(
      positive_logits=pos,
      negative_logits=neg,
      negatives_mask=negatives_mask,
      num_valid_negatives=k_i,
      log_z=log_z,
      num_data=num_data,
      eps=eps,
  )
  return -(pos_term + jnp.sum(neg_terms, axis=-1))


def crd_nce_terms(
    *,
    positive_logits: jax.Array,
    negative_logits: jax.Array,
    negatives_mask: jax.Array,
    num_valid_negatives: jax.Array,
    log_z: jax.Array | float,
    num_data: int,
    eps: float = CRD_EPS,
) -> tuple[jax.Array, jax.Array]:
  """The two log terms of CRD NCE: ([B] positive term, [B, K] negative terms).

  Split out so that the sharded bank loss can sum the negative terms of its
  own shard and psum them. Masked negative terms are exactly 0.
  `num_valid_negatives` [B] is K_i (it need not equal the local mask count).
  """
  pos, neg = _f32(positive_logits), _f32(negative_logits)
  k_i = _f32(num_valid_negatives)
  c = k_i / float(num_data)  # [B]
  c_eps = c + eps
  log_ce = jnp.log(c_eps)  # -inf only when K_i = 0 and eps = 0 (then unused)
  log_z = _f32(log_z)
  pos_term = -jax.nn.softplus(log_ce - (pos - log_z))  # [B]
  safe_neg = jnp.where(negatives_mask, neg, 0.0)  # [B, K]
  log_c_ratio = jnp.where(
      k_i > 0, jnp.log(jnp.where(k_i > 0, c, 1.0)) - log_ce, 0.0
  )
  neg_terms = log_c_ratio[:, None] - jax.nn.softplus(
      (safe_neg - log_z) - log_ce[:, None]
  )
  return pos_term, jnp.where(negatives_mask, neg_terms, 0.0)


def crd_nce(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array,
    *,
    log_z: jax.Array | float,
    num_data: int,
    temperature: float = DEFAULT_TEMPERATURE,
    negatives_mask: jax.Array | None = None,
    eps: float = CRD_EPS,
) -> jax.Array:
  """CRD NCE with explicit negatives (released-code variant, CRD Eq. 18).

  Same shapes as `info_nce`; see `crd_nce_from_logits` for the equation.
  `log_z` is passed in explicitly: compute it once on the first batch with
  `crd_log_z` and keep it in the train state (one per direction).

  Returns:
    [B] float32 per-example losses.
  """
  a, p, n = _f32(anchors), _f32(positives), _f32(negatives)
  if (
      a.shape != p.shape
      or n.ndim != 3
      or n.shape[0] != a.shape[0]
      or n.shape[2] != a.shape[1]
  ):
    raise ValueError(
        f"expected [B,P],[B,P],[B,K,P], got {a.shape},{p.shape},{n.shape}"
    )
  if negatives_mask is not None:
    n = jnp.where(negatives_mask[..., None], n, 0.0)
  pos = jnp.sum(a * p, axis=-1) / temperature  # [B]
  neg = jnp.einsum("bp,bkp->bk", a, n) / temperature  # [B, K]
  return crd_nce_from_logits(
      positive_logits=pos,
      negative_logits=neg,
      log_z=log_z,
      num_data=num_data,
      negatives_mask=negatives_mask,
      eps=eps,
  )


def crd_log_z(
    anchors: jax.Array,
    positives: jax.Array,
    negatives: jax.Array,
    *,
    num_data: int,
    temperature: float = DEFAULT_TEMPERATURE,
    negatives_mask: jax.Array | None = None,
    valid: jax.Array | None = None,
) -> jax.Array:
  """log Z of CRD's NCE, from the first batch (CRD `ContrastMemory`).

  Z = mean over the batch's [B, 1+K] scores of exp(l) * N  (CRD sets it when
  Z < 0, i.e. on the first forward pass, then never changes it), so
  log Z = logsumexp(valid l) - log(count) + log N. The result is constant:
  wrap in stop_gradient / store it in the train state.

  Args:
    anchors: [B, P]; positives: [B, P]; negatives: [B, K, P].
    num_data: N.
    temperature: tau.
    negatives_mask: [B, K] bool or None.
    valid: [B] bool rows to use or None.

  Returns:
    scalar float32 log Z.
  """
  a, p, n = _f32(anchors), _f32(positives), _f32(negatives)
  b, k = n.shape[:2]
  if negatives_mask is None:
    negatives_mask = jnp.ones((b, k), bool)
  if valid is None:
    valid = jnp.ones((b,), bool)
  n = jnp.where(negatives_mask[..., None], n, 0.0)
  pos = jnp.sum(a * p, axis=-1) / temperature  # [B]
  neg = jnp.einsum("bp,bkp->bk", a, n) / temperature  # [B, K]
  logits = jnp.concatenate([pos[:, None], neg], axis=1)  # [B, 1+K]
  mask = valid[:, None] & jnp.concatenate(
      [jnp.ones((b, 1), bool), negatives_mask], axis=1
  )
  return jax.lax.stop_gradient(
      _masked_log_mean_exp(logits, mask) + jnp.log(float(num_data))
  )


def _masked_log_mean_exp(logits, mask):
  x = jnp.where(mask, logits, -jnp.inf)
  m = jnp.max(x)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  s = jnp.sum(jnp.exp(x - m))
  return (
      jnp.log(s)
      + m
      - jnp.log(jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0))
  )
