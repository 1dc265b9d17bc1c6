"""Independent loop-style NumPy references for codir_jax.losses.

Written straight from the equations in ../shared/METHOD.md (CoDIR paper /
CRD Eq. 18), with explicit Python loops over examples, negatives, layers and
tokens, in float64. Deliberately naive: no log-sum-exp tricks beyond what
float64 needs, no vectorisation, no code shared with codir_jax.
"""

from __future__ import annotations

import math

import numpy as np


def l2_normalize(x, eps=1e-12):
  x = np.asarray(x, np.float64)
  out = np.zeros_like(x)
  for idx in np.ndindex(x.shape[:-1]):
    norm = math.sqrt(sum(float(v) ** 2 for v in x[idx]))
    out[idx] = x[idx] / max(norm, eps)
  return out


def masked_mean_pool(hidden, mask):
  hidden = np.asarray(hidden, np.float64)
  b, t, d = hidden.shape
  out = np.zeros((b, d))
  for i in range(b):
    n = 0
    for j in range(t):
      if mask[i][j]:
        out[i] += hidden[i, j]
        n += 1
    if n:
      out[i] /= n
  return out


def masked_sum_count(values, mask):
  s, c = 0.0, 0
  for v, m in zip(values, mask):
    if m:
      s += float(v)
      c += 1
  return s, float(c)


def _dot(a, b):
  return sum(float(x) * float(y) for x, y in zip(a, b))


def info_nce(anchors, positives, negatives, tau, neg_mask=None):
  """loss_i = -log( e^{<a,p>/tau} / (e^{<a,p>/tau} + sum_valid e^{<a,n_k>/tau}) )."""
  b, k = len(anchors), len(negatives[0])
  out = np.zeros(b)
  for i in range(b):
    pos = _dot(anchors[i], positives[i]) / tau
    terms = [pos]
    for j in range(k):
      if neg_mask is None or neg_mask[i][j]:
        terms.append(_dot(anchors[i], negatives[i][j]) / tau)
    mx = max(terms)
    denom = sum(math.exp(t - mx) for t in terms)
    out[i] = -(pos - mx - math.log(denom))
  return out


def in_batch_info_nce(anchors, positives, tau, valid, labels=None):
  b = len(anchors)
  out = np.zeros(b)
  for i in range(b):
    if not valid[i]:
      continue
    pos = _dot(anchors[i], positives[i]) / tau
    terms = [pos]
    for j in range(b):
      if j == i or not valid[j]:
        continue
      if labels is not None and labels[j] == labels[i]:
        continue
      terms.append(_dot(anchors[i], positives[j]) / tau)
    mx = max(terms)
    out[i] = -(pos - mx - math.log(sum(math.exp(t - mx) for t in terms)))
  return out


def crd_log_z(anchors, positives, negatives, tau, num_data, neg_mask=None):
  """Z = mean over all [B, 1+K] scores of exp(l) times N; returns log Z."""
  vals = []
  for i in range(len(anchors)):
    vals.append(math.exp(_dot(anchors[i], positives[i]) / tau))
    for j in range(len(negatives[i])):
      if neg_mask is None or neg_mask[i][j]:
        vals.append(math.exp(_dot(anchors[i], negatives[i][j]) / tau))
  return math.log(sum(vals) / len(vals) * num_data)


def crd_nce(
    anchors, positives, negatives, tau, log_z, num_data, neg_mask=None, eps=1e-7
):
  """CRD ContrastLoss: -[log(P0/(P0+m Pn+eps)) + sum_k log(m Pn/(Pk+m Pn+eps))]."""
  z = math.exp(log_z)
  out = np.zeros(len(anchors))
  for i in range(len(anchors)):
    idx = [
        j
        for j in range(len(negatives[i]))
        if neg_mask is None or neg_mask[i][j]
    ]
    c = len(idx) / num_data
    p0 = math.exp(_dot(anchors[i], positives[i]) / tau) / z
    loss = -math.log(p0 / (p0 + c + eps))
    for j in idx:
      pk = math.exp(_dot(anchors[i], negatives[i][j]) / tau) / z
      loss -= math.log(c / (pk + c + eps))
    out[i] = loss
  return out


def _softmax(v):
  mx = max(v)
  e = [math.exp(x - mx) for x in v]
  s = sum(e)
  return [x / s for x in e]


def kd_loss(student_logits, teacher_logits, rho):
  out = np.zeros(len(student_logits))
  for i in range(len(student_logits)):
    p = _softmax([x / rho for x in teacher_logits[i]])
    q = _softmax([x / rho for x in student_logits[i]])
    out[i] = rho**2 * sum(
        pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q) if pc > 0
    )
  return out


def cross_entropy(logits, labels):
  out = np.zeros(len(logits))
  for i in range(len(logits)):
    out[i] = -math.log(_softmax(list(logits[i]))[int(labels[i])])
  return out


def mse(pred, target):
  out = np.zeros(len(pred))
  for i in range(len(pred)):
    p, t = np.ravel(pred[i]), np.ravel(target[i])
    out[i] = sum((float(a) - float(b)) ** 2 for a, b in zip(p, t)) / len(p)
  return out


def pkd_loss(student_pooled, teacher_pooled):
  b, l, d = np.shape(student_pooled)
  out = np.zeros(b)
  for i in range(b):
    tot = 0.0
    for j in range(l):
      s = l2_normalize(student_pooled[i][j])
      t = l2_normalize(teacher_pooled[i][j])
      for x in range(d):
        tot += (s[x] - t[x]) ** 2
    out[i] = tot / (l * d)
  return out


def bank_write(vectors, ids, new, momentum, keep):
  m = np.array(vectors, np.float64)
  for b, i in enumerate(ids):
    if keep[b]:
      v = momentum * m[i] + (1 - momentum) * np.asarray(new[b], np.float64)
      m[i] = v / math.sqrt(sum(x * x for x in v))
  return m


def bank_fifo(vectors, ptr, new, keep):
  m = np.array(vectors, np.float64)
  n = len(m)
  for b in range(len(new)):
    if keep[b]:
      m[ptr] = new[b]
      ptr = (ptr + 1) % n
  return m, ptr


def eligible_slots(
    valid, labels, query_id, query_label, label_aware, label_gap=None
):
  out = []
  for j in range(len(valid)):
    if not valid[j] or j == query_id:
      continue
    if label_aware:
      if label_gap is None and labels[j] == query_label:
        continue
      if (
          label_gap is not None
          and abs(float(labels[j]) - float(query_label)) <= label_gap
      ):
        continue
    out.append(j)
  return out
