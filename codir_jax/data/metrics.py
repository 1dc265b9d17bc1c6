"""GLUE dev-set metrics in NumPy (no scikit-learn or scipy at runtime).

All functions take 1-D arrays of equal, non-zero length and return a Python
float computed in float64. They agree with scikit-learn (`accuracy_score`,
`f1_score`, `matthews_corrcoef`) and scipy (`pearsonr`, `spearmanr`) to
1e-9 (tests/data/metrics_test.py).

Degenerate inputs get a defined value instead of NaN and a warning:
* `f1`: 0.0 when there are no true and no predicted positives (2TP+FP+FN=0),
  as scikit-learn's default `zero_division`.
* `matthews_corrcoef`: 0.0 when predictions or labels are constant, as
  scikit-learn.
* `pearson` / `spearman`: 0.0 when either input is constant (scipy returns
  NaN). A constant predictor carries no correlation, and 0.0 keeps model
  selection and averaging well defined.
"""

from typing import Callable, Mapping

import numpy as np

from codir_jax.data import tasks as tasks_lib


def _pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
  p, y = np.asarray(predictions), np.asarray(labels)
  if p.ndim != 1 or p.shape != y.shape:
    raise ValueError(
        f'predictions {p.shape} and labels {y.shape} must be equal 1-D shapes'
    )
  if p.size == 0:
    raise ValueError('metrics of an empty set are undefined')
  return p, y


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of exact matches."""
  p, y = _pair(predictions, labels)
  return float(np.mean(p == y))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
  """Binary F1 of class `positive`: 2TP / (2TP + FP + FN); 0.0 if undefined."""
  p, y = _pair(predictions, labels)
  pp, yp = p == positive, y == positive
  tp = float(np.sum(pp & yp))
  fp = float(np.sum(pp & ~yp))
  fn = float(np.sum(~pp & yp))
  denom = 2.0 * tp + fp + fn
  return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation (multi-class form of Gorodkin 2004, as sklearn)."""
  p, y = _pair(predictions, labels)
  classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
  yi, pi = inverse[: len(y)], inverse[len(y) :]
  k = len(classes)
  confusion = np.bincount(yi * k + pi, minlength=k * k).reshape(k, k)
  confusion = confusion.astype(np.float64)
  t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
  n, correct = confusion.sum(), np.trace(confusion)
  cov_yp = correct * n - t_sum @ p_sum
  cov_pp = n * n - p_sum @ p_sum
  cov_yy = n * n - t_sum @ t_sum
  if cov_pp * cov_yy == 0:
    return 0.0
  return float(cov_yp / np.sqrt(cov_yy * cov_pp))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Pearson correlation; 0.0 if either input is constant."""
  p, y = _pair(predictions, labels)
  p, y = p.astype(np.float64), y.astype(np.float64)
  pc, yc = p - p.mean(), y - y.mean()
  denom = np.sqrt(np.sum(pc * pc) * np.sum(yc * yc))
  if denom == 0 or not np.isfinite(denom):
    return 0.0 if denom == 0 else float('nan')
  return float(np.clip(np.sum(pc * yc) / denom, -1.0, 1.0))


def average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks, ties get the mean of their ranks (scipy `rankdata`)."""
  x = np.asarray(x)
  sorter = np.argsort(x, kind='mergesort')
  inverse = np.empty(x.size, np.intp)
  inverse[sorter] = np.arange(x.size)
  xs = x[sorter]
  new_value = np.r_[True, xs[1:] != xs[:-1]]
  dense = np.cumsum(new_value)[inverse]  # 1-based group of each element
  bounds = np.r_[np.nonzero(new_value)[0], x.size]  # group start positions
  return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Spearman correlation (Pearson of average ranks); 0.0 if constant."""
  p, y = _pair(predictions, labels)
  return pearson(average_ranks(p), average_ranks(y))


METRICS: Mapping[str, Callable[[np.ndarray, np.ndarray], float]] = {
    tasks_lib.ACCURACY: accuracy,
    tasks_lib.F1: f1,
    tasks_lib.MCC: matthews_corrcoef,
    tasks_lib.PEARSON: pearson,
    tasks_lib.SPEARMAN: spearman,
}


def glue_metrics(
    task: str,
    predictions: np.ndarray,
    labels: np.ndarray,
    *,
    mask: np.ndarray | None = None,
) -> dict[str, float]:
  """The GLUE dev metrics of `task`.

  MRPC/QQP: accuracy and f1; CoLA: mcc; STS-B: pearson and spearman; all
  others: accuracy. `score` is their mean (the task's GLUE score).

  Args:
    task: task key (`cola`, `sst2`, ...).
    predictions: [N] class indices, or [N, C] logits (argmax is taken); for
      STS-B [N] or [N, 1] scores.
    labels: [N] int class indices, or float scores for STS-B.
    mask: optional [N] bool, True = keep (e.g. a batch's `valid`).

  Returns:
    {metric name: value, ..., 'score': mean of them}.
  """
  spec = tasks_lib.get_task(task)
  if not spec.metric_names:
    raise ValueError(f'Task {spec.name!r} has no labelled dev metrics')
  p, y = np.asarray(predictions), np.asarray(labels)
  if spec.is_regression and p.ndim == 2:
    if p.shape[1] != 1:
      raise ValueError(f'STS-B predictions must be [N] or [N, 1]: {p.shape}')
    p = p[:, 0]
  elif p.ndim == 2:
    p = np.argmax(p, axis=-1)
  if mask is not None:
    mask = np.asarray(mask, bool)
    p, y = p[mask], y[mask]
  if np.isnan(y).any() if spec.is_regression else (y < 0).any():
    raise ValueError(f'{spec.name}: labels missing (-1 / NaN): test split?')
  out = {name: METRICS[name](p, y) for name in spec.metric_names}
  out['score'] = float(np.mean(list(out.values())))
  return out
