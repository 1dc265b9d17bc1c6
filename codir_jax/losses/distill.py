"""Logit distillation, task losses and the PKD-style L2 baseline.

Fine-tuning objective (METHOD.md, "Total objective"; paper Sec. 3):

  L = (1 - beta) * CE(y, z_s) + beta * rho^2 * KL(softmax(z_t/rho) || softmax(z_s/rho))
      + lambda * L_crd

Regression (STS-B): CE -> MSE(s, y), KD -> MSE(s, t). Released-code defaults:
rho = 2, beta = 0.5. All functions here return per-example values; codir_jax
averages over examples (the released code sums over the batch, so its lambda
acts as lambda / B against per-example means, METHOD.md).

The teacher side is not stop-gradient-ed here: the train step computes the
teacher outside `value_and_grad` (STYLE.md sec. 3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from codir_jax.losses import representations

# Released code: KD temperature rho = 2 (METHOD.md).
DEFAULT_KD_TEMPERATURE = 2.0


def kd_loss(
    *,
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    temperature: float = DEFAULT_KD_TEMPERATURE,
) -> jax.Array:
  """Hinton KD: rho^2 * KL(softmax(t/rho) || softmax(s/rho)) per example.

  KL_i = sum_c p_ic (log p_ic - log q_ic),  p = softmax(t/rho), q = softmax(s/rho)

  Works on any leading shape (e.g. [B, T, V] masked-token logits in
  pre-training; mask the result with `reductions.masked_sum_count`).

  Args:
    student_logits: [..., C].
    teacher_logits: [..., C].
    temperature: rho (2 in the released code).

  Returns:
    [...] float32.
  """
  if student_logits.shape != teacher_logits.shape:
    raise ValueError(
        f"shape mismatch {student_logits.shape} vs {teacher_logits.shape}"
    )
  log_q = jax.nn.log_softmax(
      representations.upcast(student_logits) / temperature, axis=-1
  )
  log_p = jax.nn.log_softmax(
      representations.upcast(teacher_logits) / temperature, axis=-1
  )
  p = jnp.exp(log_p)
  kl = jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1)
  return (temperature**2) * kl


def cross_entropy(*, logits: jax.Array, labels: jax.Array) -> jax.Array:
  """CE_i = -log softmax(z_i)[y_i] (task loss, paper Sec. 3).

  Args:
    logits: [..., C].
    labels: [...] integer class ids. Out-of-range ids (e.g. -1 on padding
      rows) are clipped to a valid class, giving a finite value that the
      caller masks out.

  Returns:
    [...] float32.
  """
  if labels.shape != logits.shape[:-1]:
    raise ValueError(
        f"labels {labels.shape} do not match logits {logits.shape}"
    )
  logp = jax.nn.log_softmax(representations.upcast(logits), axis=-1)
  idx = jnp.clip(jnp.asarray(labels, jnp.int32), 0, logits.shape[-1] - 1)
  return -jnp.take_along_axis(logp, idx[..., None], axis=-1)[..., 0]


def mse(*, predictions: jax.Array, targets: jax.Array) -> jax.Array:
  """MSE_i = mean_d (s_id - y_id)^2 (regression task loss, and KD -> MSE(s, t)).

  Args:
    predictions: [B, ...]; [B, 1] regression logits are squeezed to match
      [B] targets.
    targets: [B, ...] (labels y, or teacher outputs t).

  Returns:
    [B] float32 (mean over the non-batch axes; the value itself for [B]).
  """
  s = representations.upcast(predictions)
  y = representations.upcast(targets)
  if s.ndim == y.ndim + 1 and s.shape[-1] == 1:
    s = s[..., 0]
  if s.shape != y.shape:
    raise ValueError(f"shape mismatch {predictions.shape} vs {targets.shape}")
  d2 = (s - y) ** 2
  return d2.reshape(d2.shape[0], -1).mean(axis=-1) if d2.ndim > 1 else d2


def pkd_loss(
    *,
    student_pooled: jax.Array,
    teacher_pooled: jax.Array,
    eps: float = representations.L2_EPS,
) -> jax.Array:
  """PKD-style L2 baseline (METHOD.md "Baselines"; Sun et al. 2019, PKD).

  loss_i = mean_{l, d} ( s_ild/||s_il|| - t_ild/||t_il|| )^2

  i.e. the MSE (mean over mapped layers and hidden units, as PKD's released
  `mse_loss`) between L2-normalised pooled states of the mapped layers. The
  PKD paper's Eq. (sum of squared norms over layers) is L*D times this.

  Args:
    student_pooled: [B, L, D] pooled student states of the student layers.
    teacher_pooled: [B, L, D] pooled teacher states of the mapped layers.
    eps: L2-normalisation eps.

  Returns:
    [B] float32.
  """
  if student_pooled.shape != teacher_pooled.shape or student_pooled.ndim != 3:
    raise ValueError(
        f"expected equal [B,L,D], got {student_pooled.shape}, {teacher_pooled.shape}"
    )
  s = representations.l2_normalize(student_pooled, eps=eps)
  t = representations.l2_normalize(teacher_pooled, eps=eps)
  return jnp.mean((s - t) ** 2, axis=(1, 2))
