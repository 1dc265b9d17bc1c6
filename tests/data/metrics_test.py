"""NumPy GLUE metrics against scikit-learn and scipy."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from codir_jax import data

SEEDS = [0, 1, 2, 3, 4]
TOL = 1e-9


@pytest.mark.parametrize('seed', SEEDS)
@pytest.mark.parametrize('num_classes', [2, 3])
def test_classification_matches_sklearn(seed, num_classes):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(5, 500))
  y = rng.integers(0, num_classes, n)
  p = np.where(rng.random(n) < 0.7, y, rng.integers(0, num_classes, n))
  assert abs(data.accuracy(p, y) - skm.accuracy_score(y, p)) < TOL
  assert abs(data.matthews_corrcoef(p, y) - skm.matthews_corrcoef(y, p)) < TOL
  if num_classes == 2:
    assert abs(data.f1(p, y) - skm.f1_score(y, p)) < TOL


@pytest.mark.parametrize('seed', SEEDS)
def test_correlations_match_scipy(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(3, 500))
  y = rng.uniform(0, 5, n)
  p = y + rng.normal(0, 1 + seed, n)
  assert abs(data.pearson(p, y) - stats.pearsonr(p, y)[0]) < TOL
  assert abs(data.spearman(p, y) - stats.spearmanr(p, y)[0]) < TOL


@pytest.mark.parametrize('seed', SEEDS)
def test_spearman_with_ties(seed):
  rng = np.random.default_rng(seed)
  n = int(rng.integers(10, 400))
  y = rng.integers(0, 6, n).astype(np.float64) / 5  # many ties
  p = np.round(y + rng.normal(0, 0.5, n), 1)  # ties too
  np.testing.assert_allclose(
      data.average_ranks(p), stats.rankdata(p), rtol=0, atol=0
  )
  assert abs(data.spearman(p, y) - stats.spearmanr(p, y)[0]) < TOL


def test_degenerate_inputs_have_defined_values():
  y = np.array([0, 1, 1, 0])
  const = np.zeros(4, int)
  assert data.matthews_corrcoef(const, y) == 0.0
  assert data.f1(const, const) == 0.0
  assert data.f1(const, y) == 0.0
  assert data.pearson(np.ones(4), y) == 0.0
  assert data.spearman(np.ones(4), y) == 0.0
  assert data.pearson(y, np.full(4, 2.5)) == 0.0
  assert data.accuracy(const, const) == 1.0
  with pytest.raises(ValueError, match='empty'):
    data.accuracy(np.zeros(0), np.zeros(0))
  with pytest.raises(ValueError, match='shapes'):
    data.accuracy(np.zeros(3), np.zeros(4))


def test_glue_metrics_per_task():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 100)
  p = np.where(rng.random(100) < 0.8, y, 1 - y)
  m = data.glue_metrics('mrpc', p, y)
  assert set(m) == {'accuracy', 'f1', 'score'}
  assert m['f1'] == pytest.approx(skm.f1_score(y, p), abs=TOL)
  assert m['score'] == pytest.approx((m['accuracy'] + m['f1']) / 2)
  assert set(data.glue_metrics('qqp', p, y)) == {'accuracy', 'f1', 'score'}
  m = data.glue_metrics('cola', p, y)
  assert set(m) == {'mcc', 'score'}
  assert m['mcc'] == pytest.approx(skm.matthews_corrcoef(y, p), abs=TOL)
  for task in ['sst2', 'qnli', 'rte', 'wnli']:
    assert set(data.glue_metrics(task, p, y)) == {'accuracy', 'score'}
  s = rng.uniform(0, 5, 100)
  pred = s + rng.normal(0, 1, 100)
  m = data.glue_metrics('stsb', pred[:, None], s)
  assert set(m) == {'pearson', 'spearman', 'score'}
  assert m['pearson'] == pytest.approx(stats.pearsonr(pred, s)[0], abs=TOL)
  assert m['spearman'] == pytest.approx(stats.spearmanr(pred, s)[0], abs=TOL)
  with pytest.raises(ValueError, match='no labelled dev metrics'):
    data.glue_metrics('ax', p, y)


def test_glue_metrics_logits_and_mask():
  y = np.array([2, 0, 1, 1])
  logits = np.eye(3)[[2, 0, 0, 1]] + 0.1
  m = data.glue_metrics('mnli', logits, y)
  assert m['accuracy'] == 0.75
  m = data.glue_metrics(
      'mnli', logits, y, mask=np.array([True, True, False, True])
  )
  assert m['accuracy'] == 1.0
  with pytest.raises(ValueError, match='labels missing'):
    data.glue_metrics('mnli', logits, np.full(4, -1))
  with pytest.raises(ValueError, match='labels missing'):
    data.glue_metrics('stsb', np.zeros(4), np.full(4, np.nan))
