"""Tests of codir_jax.losses.memory_bank on one device (sharded: sharded_test)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from codir_jax.losses import contrastive
from codir_jax.losses import bank_losses
from codir_jax.losses import memory_bank as mb
from tests.reference import losses_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)
KEY = jax.random.PRNGKey(0)


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_init():
  labels = np.arange(10) % 3
  bank = mb.init(KEY, num_slots=10, dim=12, labels=labels, pad_to_multiple=4)
  s = 1 / math.sqrt(12 / 3)
  assert bank.vectors.shape == (12, 12) and bank.vectors.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(bank.vectors))) <= s
  assert float(jnp.max(jnp.abs(bank.vectors))) > 0.8 * s
  np.testing.assert_array_equal(bank.labels[:10], labels)
  assert not bank.valid.any() and int(bank.ptr) == 0
  bank = mb.init(KEY, num_slots=10, dim=12, all_valid=True, pad_to_multiple=4)
  np.testing.assert_array_equal(bank.valid, np.arange(12) < 10)
  with pytest.raises(ValueError):
    mb.init(KEY, num_slots=10, dim=4, labels=np.zeros(9))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_write_momentum_matches_reference(momentum):
  rng = np.random.default_rng(1)
  bank = mb.init(KEY, num_slots=16, dim=6)
  ids = np.array([3, 0, 15, 7])
  new = _unit(rng, 4, 6)
  keep = np.array([True, True, False, True])
  out = jax.jit(
      lambda b: mb.write(
          b,
          ids=ids,
          vectors=new,
          momentum=momentum,
          mask=keep,
          labels=np.array([1, 2, 3, 4]),
      )
  )(bank)
  np.testing.assert_allclose(
      out.vectors, ref.bank_write(bank.vectors, ids, new, momentum, keep), **TOL
  )
  np.testing.assert_array_equal(np.flatnonzero(out.valid), [0, 3, 7])
  np.testing.assert_array_equal(
      out.labels[np.array([3, 0, 15, 7])], [1, 2, 0, 4]
  )


def test_write_fifo_wraps_around():
  rng = np.random.default_rng(2)
  bank = mb.init(KEY, num_slots=7, dim=3)  # 3, 2, 3, 2 rows: wraps mid-batch
  want, ptr = np.asarray(bank.vectors, np.float64), 0
  step = jax.jit(lambda b, v, k: mb.write_fifo(b, vectors=v, mask=k))
  for i in range(4):
    new = _unit(rng, 3, 3)
    keep = np.array([True, i % 2 == 0, True])
    bank = step(bank, new, keep)
    want, ptr = ref.bank_fifo(want, ptr, new, keep)
    if i == 2:
      third = new
    np.testing.assert_allclose(bank.vectors, want, **TOL)
    assert int(bank.ptr) == ptr
  assert bank.valid.all() and int(bank.ptr) == 3
  np.testing.assert_allclose(
      bank.vectors[0], third[2], **TOL
  )  # row 8 of 10 -> slot 0
  with pytest.raises(ValueError):
    mb.write_fifo(bank, vectors=np.zeros((8, 3), np.float32))  # B > N


def test_read():
  bank = mb.init(KEY, num_slots=8, dim=4)
  np.testing.assert_array_equal(
      mb.read(bank, ids=np.array([5, 1])), bank.vectors[np.array([5, 1])]
  )


def _bank_with_labels(n=60, p=8, invalid=(4, 9, 33)):
  labels = np.arange(n) % 3
  bank = mb.init(KEY, num_slots=n, dim=p, labels=labels, all_valid=True)
  valid = np.ones(n, bool)
  valid[list(invalid)] = False
  return bank.replace(valid=jnp.asarray(valid)), labels, valid


@pytest.mark.parametrize("label_aware", [True, False])
def test_samples_only_eligible(label_aware):
  bank, labels, valid = _bank_with_labels()
  qid = np.array([0, 1, 2, 5, 9])
  ids, mask = mb.sample_negatives(
      bank,
      rng=KEY,
      query_ids=qid,
      query_labels=labels[qid],
      num_negatives=64,
      label_aware=label_aware,
  )
  assert ids.shape == (5, 64) and ids.dtype == jnp.int32 and mask.all()
  for i, q in enumerate(qid):
    elig = set(ref.eligible_slots(valid, labels, q, labels[q], label_aware))
    assert set(np.asarray(ids[i]).tolist()) <= elig
    assert q not in set(np.asarray(ids[i]).tolist())


def test_regression_gap_rule_and_no_eligible():
  n = 20
  scores = np.linspace(0.0, 5.0, n).astype(np.float32)
  bank = mb.init(KEY, num_slots=n, dim=4, labels=scores, all_valid=True)
  qid = np.array([0, 10])
  ids, mask = mb.sample_negatives(
      bank,
      rng=KEY,
      query_ids=qid,
      query_labels=scores[qid],
      num_negatives=50,
      label_gap=1.0,
  )
  for i, q in enumerate(qid):
    assert np.all(np.abs(scores[np.asarray(ids[i])] - scores[q]) > 1.0)
  with pytest.raises(ValueError):
    mb.sample_negatives(bank, rng=KEY, query_ids=qid, query_labels=scores[qid])
  # Gap larger than the label range: no eligible slot -> all draws masked, loss 0.
  ids, mask = mb.sample_negatives(
      bank,
      rng=KEY,
      query_ids=qid,
      query_labels=scores[qid],
      num_negatives=7,
      label_gap=10.0,
  )
  assert not mask.any()
  q = _unit(np.random.default_rng(0), 2, 4)
  loss = bank_losses.bank_info_nce(
      queries=q,
      positives=q[::-1],
      bank=bank,
      rng=KEY,
      query_ids=qid,
      query_labels=scores[qid],
      num_negatives=7,
      label_gap=10.0,
  )
  np.testing.assert_array_equal(loss, 0.0)


def test_fresh_bank_has_no_eligible_slot():
  bank = mb.init(KEY, num_slots=8, dim=4, labels=np.arange(8) % 2)
  _, mask = mb.sample_negatives(
      bank,
      rng=KEY,
      query_ids=np.array([0]),
      query_labels=np.array([0]),
      num_negatives=3,
  )
  assert not mask.any()


@pytest.mark.parametrize("label_aware", [True, False])
def test_uniform_over_eligible_chi_square(label_aware):
  bank, labels, valid = _bank_with_labels()
  q = 2
  elig = ref.eligible_slots(valid, labels, q, labels[q], label_aware)
  draws = 200 * len(elig)
  ids, mask = jax.jit(
      lambda b: mb.sample_negatives(
          b,
          rng=jax.random.PRNGKey(123),
          query_ids=np.array([q]),
          query_labels=labels[[q]],
          num_negatives=draws,
          label_aware=label_aware,
      )
  )(bank)
  assert mask.all()
  counts = np.bincount(np.asarray(ids[0]), minlength=len(labels))
  assert counts[[j for j in range(len(labels)) if j not in elig]].sum() == 0
  assert scipy.stats.chisquare(counts[elig]).pvalue > 1e-3


@pytest.mark.parametrize("label_aware", [True, False])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_bank_losses_equal_explicit_losses(label_aware, tau):
  bank, labels, _ = _bank_with_labels()
  rng = np.random.default_rng(3)
  bank = bank.replace(vectors=jnp.asarray(_unit(rng, 60, 8)))
  qid = np.array([0, 1, 2, 5, 9, 59])
  kw = dict(
      bank=bank,
      rng=jax.random.PRNGKey(7),
      query_ids=qid,
      query_labels=labels[qid],
      num_negatives=12,
      temperature=tau,
      label_aware=label_aware,
  )
  q, p = _unit(rng, 6, 8), _unit(rng, 6, 8)
  ids, mask = mb.sample_negatives(
      bank,
      rng=kw["rng"],
      query_ids=qid,
      query_labels=labels[qid],
      num_negatives=12,
      label_aware=label_aware,
  )
  negs = np.asarray(bank.vectors)[np.asarray(ids)]
  f = jax.jit(
      lambda q, p: bank_losses.bank_info_nce(queries=q, positives=p, **kw)
  )
  np.testing.assert_allclose(
      f(q, p), ref.info_nce(q, p, negs, tau, np.asarray(mask)), **TOL
  )
  g_bank = jax.grad(lambda q: f(q, p).sum())(q)
  g_expl = jax.grad(
      lambda q: contrastive.info_nce(q, p, negs, temperature=tau).sum()
  )(q)
  np.testing.assert_allclose(g_bank, g_expl, **TOL)
  log_z = bank_losses.bank_crd_log_z(queries=q, positives=p, num_data=60, **kw)
  np.testing.assert_allclose(log_z, ref.crd_log_z(q, p, negs, tau, 60), **TOL)
  nce = bank_losses.bank_crd_nce(
      queries=q, positives=p, log_z=log_z, num_data=60, **kw
  )
  np.testing.assert_allclose(
      nce, ref.crd_nce(q, p, negs, tau, float(log_z), 60), **TOL
  )


def test_bank_loss_padded_rows_and_bf16():
  bank, labels, _ = _bank_with_labels()
  rng = np.random.default_rng(4)
  q = _unit(rng, 4, 8)
  q[3] = 0.0  # padded row: zero vector, no id
  qid = np.array([0, 1, 2, -1])
  kw = dict(
      bank=bank,
      rng=KEY,
      query_ids=qid,
      query_labels=labels[np.maximum(qid, 0)],
      num_negatives=10,
  )
  f = lambda q: bank_losses.bank_info_nce(queries=q, positives=q, **kw)
  loss, g = jax.value_and_grad(lambda q: jnp.sum(f(q)[:3]))(q)
  assert np.isfinite(loss) and np.isfinite(g).all() and np.isfinite(f(q)).all()
  np.testing.assert_array_equal(g[3], 0.0)
  # bf16 queries: finite float32 output within 0.1 of the float32 result.
  lb = f(jnp.asarray(q, jnp.bfloat16))
  assert lb.dtype == jnp.float32
  np.testing.assert_allclose(lb, f(q), atol=0.1)
