"""The CoDIR fine-tuning objective in NumPy, straight from METHOD.md.

Given the models' outputs (logits, every hidden state), the projection
heads, the banks before the step and the sampled negative ids, returns the
per-term means and the total

  L = (1 - beta) CE(y, s) + beta rho^2 KL(t/rho || s/rho)
      + lambda (L_s + L_t) / 2 + mu PKD
  (regression: CE -> MSE(s, y), KD -> MSE(s, t); released weighting:
   lambda -> lambda / B with B the valid rows)

with every per-example value from `losses_reference` (loop-style NumPy).
Nothing here imports codir_jax.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.reference import losses_reference as ref


@dataclasses.dataclass
class Setting:
  """The objective's knobs, spelled as in METHOD.md."""

  beta: float  # KD weight.
  rho: float  # KD temperature.
  lam: float  # Contrastive weight lambda.
  mu: float  # PKD weight.
  tau: float  # Contrastive temperature.
  pooling: str  # 'mean' | 'first'.
  student_layers: tuple[int, ...]  # 1-based.
  teacher_layers: tuple[int, ...]
  negatives: str  # 'bank' | 'in_batch'.
  objective: str  # 'info_nce' | 'nce'.
  positive: str  # 'current' | 'bank'.
  regression: bool
  mlm: bool  # CE / KD over masked tokens (CoDIR-Pre), no labels.
  batch_scaled: bool  # Released: lambda / B.
  num_data: int  # N for CRD NCE.


def pooled(hidden_states, mask, layers, pooling):
  """[B, L, D]: the pooled hidden state of each listed layer."""
  out = []
  for l in layers:
    h = np.asarray(hidden_states[l], np.float64)
    if pooling == "mean":
      out.append(ref.masked_mean_pool(h, mask))
    else:
      out.append(h[:, 0])
  return np.stack(out, axis=1)


def project(pooled_states, kernel, bias):
  """normalize(concat_l(pooled) W + b), per row: [B, P]."""
  x = pooled_states.reshape(pooled_states.shape[0], -1)
  z = x @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)
  return np.stack([ref.l2_normalize(r) for r in z])


def _mean(values, keep):
  s, c = ref.masked_sum_count(values, keep)
  return s / max(c, 1.0)


def _bank_direction(
    st: Setting, anchors, positives, bank, ids, mask, keep, log_z
):
  negs = np.asarray(bank, np.float64)[ids]  # [B, K, P]
  if st.objective == "info_nce":
    return ref.info_nce(anchors, positives, negs, st.tau, mask), log_z
  if log_z is None:  # CRD freezes Z on the first batch (valid rows only).
    rows = [i for i in range(len(anchors)) if keep[i]]
    log_z = ref.crd_log_z(
        anchors[rows],
        positives[rows],
        negs[rows],
        st.tau,
        st.num_data,
        mask[rows],
    )
  return (
      ref.crd_nce(anchors, positives, negs, st.tau, log_z, st.num_data, mask),
      log_z,
  )


def objective(
    st: Setting,
    *,
    s_logits,
    t_logits,
    s_hidden,
    t_hidden,
    attention_mask,
    labels,
    valid,
    example_ids,
    proj_s=None,
    proj_t=None,
    bank_s=None,
    bank_t=None,
    negs_s=None,
    negs_t=None,
    log_z=(None, None),
    mlm_mask=None,
    mlm_labels=None,
):
  """{term: mean over valid rows} and 'loss' (see module docstring).

  Args:
    s_logits, t_logits: [B, C] logits.
    s_hidden, t_hidden: hidden-state lists (index 0 = embeddings).
    attention_mask: [B, T]; labels [B]; valid [B] bool; example_ids [B].
    proj_s, proj_t: (kernel, bias) of each projection head.
    bank_s, bank_t: [N, P] bank vectors before the step.
    negs_s, negs_t: (ids [B, K], mask [B, K]) of the student direction
      (anchor z_s against bank_t) and the teacher direction.
    log_z: frozen log Z of each direction (None = compute, first batch).
    mlm_mask, mlm_labels: [B, T] masked positions and their targets (mlm).
  """
  keep = np.asarray(valid, bool)
  s_logits = np.asarray(s_logits, np.float64)
  t_logits = np.asarray(t_logits, np.float64)
  terms = {}
  means = {}
  if st.mlm:  # Token terms: a mean over the masked tokens of valid rows.
    tok = np.asarray(mlm_mask, bool) & keep[:, None]  # [B, T]
    means["task"] = float(
        np.mean(ref.cross_entropy(s_logits[tok], np.asarray(mlm_labels)[tok]))
    )
    means["kd"] = float(
        np.mean(ref.kd_loss(s_logits[tok], t_logits[tok], st.rho))
    )
  elif st.regression:
    terms["task"] = ref.mse(s_logits[:, :1], np.asarray(labels)[:, None])
    terms["kd"] = ref.mse(s_logits[:, :1], t_logits[:, :1])
  else:
    terms["task"] = ref.cross_entropy(s_logits, labels)
    terms["kd"] = ref.kd_loss(s_logits, t_logits, st.rho)
  ps = pooled(s_hidden, attention_mask, st.student_layers, st.pooling)
  pt = pooled(t_hidden, attention_mask, st.teacher_layers, st.pooling)
  if st.mu > 0:
    terms["pkd"] = ref.pkd_loss(ps, pt)
  if st.lam > 0:
    z_s, z_t = project(ps, *proj_s), project(pt, *proj_t)
    if st.negatives == "in_batch":
      lab = None if st.regression or st.mlm else labels
      crd = 0.5 * (
          ref.in_batch_info_nce(z_s, z_t, st.tau, keep, lab)
          + ref.in_batch_info_nce(z_t, z_s, st.tau, keep, lab)
      )
    else:
      ids = np.where(keep, example_ids, 0)
      if st.positive == "current":
        pos_s, pos_t = z_t, z_s
      else:
        pos_s = np.asarray(bank_t, np.float64)[ids]
        pos_t = np.asarray(bank_s, np.float64)[ids]
      l_s, _ = _bank_direction(
          st, z_s, pos_s, bank_t, negs_s[0], negs_s[1], keep, log_z[0]
      )
      l_t, _ = _bank_direction(
          st, z_t, pos_t, bank_s, negs_t[0], negs_t[1], keep, log_z[1]
      )
      crd = 0.5 * (l_s + l_t)
    terms["crd"] = crd
  means.update({n: _mean(v, keep) for n, v in terms.items()})
  lam = st.lam / max(keep.sum(), 1) if st.batch_scaled else st.lam
  weights = {"task": 1.0 - st.beta, "kd": st.beta, "pkd": st.mu, "crd": lam}
  if st.beta == 0:
    means.pop("kd")
  means["loss"] = sum(weights[n] * v for n, v in means.items())
  return means
