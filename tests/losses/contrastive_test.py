"""Tests of codir_jax.losses.contrastive against the loop-style reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from codir_jax.losses import contrastive
from codir_jax.losses import representations
from tests.reference import losses_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _data(seed, b, k, p, mask_frac=0.3):
  rng = np.random.default_rng(seed)
  a, pos, neg = _unit(rng, b, p), _unit(rng, b, p), _unit(rng, b, k, p)
  mask = rng.random((b, k)) > mask_frac
  return a, pos, neg, mask


SHAPES = [(1, 1, 4), (3, 5, 8), (8, 17, 16)]
TAUS = [0.07, 0.5, 1.0]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("masked", [False, True])
def test_info_nce_matches_reference(shape, tau, masked):
  a, p, n, mask = _data(0, *shape)
  mask = mask if masked else None
  got = contrastive.info_nce(a, p, n, temperature=tau, negatives_mask=mask)
  want = ref.info_nce(a, p, n, tau, mask)
  assert got.shape == (shape[0],) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("masked", [False, True])
def test_crd_nce_matches_reference(shape, tau, masked):
  a, p, n, mask = _data(1, *shape)
  mask = mask if masked else None
  num_data = 50
  log_z = contrastive.crd_log_z(
      a, p, n, num_data=num_data, temperature=tau, negatives_mask=mask
  )
  np.testing.assert_allclose(
      log_z, ref.crd_log_z(a, p, n, tau, num_data, mask), **TOL
  )
  got = contrastive.crd_nce(
      a,
      p,
      n,
      log_z=log_z,
      num_data=num_data,
      temperature=tau,
      negatives_mask=mask,
  )
  want = ref.crd_nce(a, p, n, tau, float(log_z), num_data, mask)
  np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("b,p", [(2, 4), (6, 8), (9, 16)])
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("use_labels", [False, True])
def test_in_batch_matches_reference(b, p, tau, use_labels):
  rng = np.random.default_rng(b)
  a, pos = _unit(rng, b, p), _unit(rng, b, p)
  valid = np.arange(b) < b - 1  # last row padding
  labels = rng.integers(0, 2, size=b) if use_labels else None
  got = contrastive.in_batch_info_nce(
      a, pos, temperature=tau, valid=valid, labels=labels
  )
  np.testing.assert_allclose(
      got, ref.in_batch_info_nce(a, pos, tau, valid, labels), **TOL
  )


def test_masking_a_negative_equals_removing_it():
  a, p, n, _ = _data(2, 4, 6, 8)
  mask = np.ones((4, 6), bool)
  mask[:, 2] = False
  keep = [0, 1, 3, 4, 5]
  for fn, kw in [
      (contrastive.info_nce, {}),
      (contrastive.crd_nce, dict(log_z=3.0, num_data=40)),
  ]:
    masked = fn(a, p, n, temperature=0.1, negatives_mask=mask, **kw)
    removed = fn(a, p, n[:, keep], temperature=0.1, **kw)
    np.testing.assert_allclose(masked, removed, rtol=1e-6, atol=1e-6)


def test_garbage_in_masked_slots_changes_nothing():
  a, p, n, mask = _data(3, 4, 6, 8)
  junk = n.copy()
  junk[~mask] = np.nan
  for fn, kw in [
      (contrastive.info_nce, {}),
      (contrastive.crd_nce, dict(log_z=3.0, num_data=40)),
  ]:
    f = lambda a, n: jnp.sum(
        fn(a, p, n, temperature=0.1, negatives_mask=mask, **kw)
    )
    v1, g1 = jax.value_and_grad(f)(a, n)
    v2, g2 = jax.value_and_grad(f)(a, junk)
    np.testing.assert_allclose(v1, v2, rtol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-6)
    assert np.isfinite(g2).all()


def test_no_valid_negative_gives_zero_loss_and_grad():
  a, p, n, _ = _data(4, 3, 5, 8)
  mask = np.ones((3, 5), bool)
  mask[1] = False
  f = lambda a: contrastive.info_nce(
      a, p, n, temperature=0.07, negatives_mask=mask
  )
  loss = f(a)
  assert loss[1] == 0.0 and loss[0] > 0 and loss[2] > 0
  g = jax.grad(lambda a: f(a)[1])(a)
  assert np.all(g == 0.0)
  # In-batch: a row whose only other rows share its label.
  labels = np.array([0, 0, 1])
  lb = contrastive.in_batch_info_nce(a, p, temperature=0.07, labels=labels)
  # Every row has >= 1 other-label row -> all losses > 0; with one shared
  # label no row has a negative -> all exactly 0.
  lb2 = contrastive.in_batch_info_nce(
      a, p, temperature=0.07, labels=np.array([5, 5, 5])
  )
  np.testing.assert_array_equal(lb2, np.zeros(3))
  assert np.all(lb > 0)
  # CRD NCE with K_i = 0 and eps = 0 is exactly 0 too.
  nce = contrastive.crd_nce(
      a, p, n, log_z=2.0, num_data=10, negatives_mask=mask, eps=0.0
  )
  assert nce[1] == 0.0


def test_padded_rows_finite_values_and_grads():
  a, p, _, _ = _data(5, 4, 3, 8)
  a[2:] = 0.0  # padded rows: zero vectors
  p[2:] = np.nan  # even NaN in padding must not leak
  valid = np.array([True, True, False, False])
  f = lambda a, p: jnp.sum(
      contrastive.in_batch_info_nce(a, p, temperature=0.07, valid=valid)
  )
  v, (ga, gp) = jax.value_and_grad(f, argnums=(0, 1))(a, p)
  assert np.isfinite(v) and np.isfinite(ga).all() and np.isfinite(gp).all()
  per = contrastive.in_batch_info_nce(a, p, temperature=0.07, valid=valid)
  np.testing.assert_array_equal(per[2:], 0.0)


def test_loss_falls_as_student_approaches_teacher():
  rng = np.random.default_rng(6)
  t = _unit(rng, 8, 16)
  s0 = _unit(rng, 8, 16)
  negs = _unit(rng, 8, 20, 16)
  losses = []
  for alpha in [0.0, 0.25, 0.5, 0.75, 1.0]:
    s = representations.l2_normalize((1 - alpha) * s0 + alpha * t)
    losses.append(
        float(jnp.mean(contrastive.info_nce(s, t, negs, temperature=0.07)))
    )
    ib = float(jnp.mean(contrastive.in_batch_info_nce(s, t, temperature=0.07)))
    losses[-1] = (losses[-1], ib)
  for (l1, b1), (l2, b2) in zip(losses, losses[1:]):
    assert l2 < l1 and b2 < b1, losses


def test_bf16_inputs_finite_and_close():
  a, p, n, mask = _data(7, 8, 12, 16)
  bf = lambda x: jnp.asarray(x, jnp.bfloat16)
  # Inputs rounded to bf16 (8-bit mantissa): scores move by <~1e-2 / tau.
  # Stated tolerance: |bf16 loss - f32 loss| < 0.1 at tau = 0.07.
  ref32 = contrastive.info_nce(a, p, n, temperature=0.07, negatives_mask=mask)
  got = contrastive.info_nce(
      bf(a), bf(p), bf(n), temperature=0.07, negatives_mask=mask
  )
  assert got.dtype == jnp.float32 and np.isfinite(got).all()
  np.testing.assert_allclose(got, ref32, atol=0.1)
  g = jax.grad(
      lambda a: contrastive.info_nce(a, bf(p), bf(n), temperature=0.07).sum()
  )(bf(a))
  assert np.isfinite(np.asarray(g, np.float32)).all()
  nce = contrastive.crd_nce(
      bf(a), bf(p), bf(n), log_z=5.0, num_data=100, temperature=0.07
  )
  assert np.isfinite(nce).all()
  ib = contrastive.in_batch_info_nce(bf(a), bf(p), temperature=0.07)
  np.testing.assert_allclose(
      ib, contrastive.in_batch_info_nce(a, p, temperature=0.07), atol=0.1
  )


def test_check_grads():
  with jax.enable_x64(True):
    a, p, n, mask = (
        np.asarray(x, np.float64) if x.dtype != bool else x
        for x in _data(8, 3, 4, 5)
    )
    mask = np.asarray(mask)
    check_grads(
        lambda a, p, n: contrastive.info_nce(
            a, p, n, temperature=0.5, negatives_mask=mask
        ),
        (a, p, n),
        order=1,
        modes=("fwd", "rev"),
    )
    check_grads(
        lambda a, p, n: contrastive.crd_nce(
            a,
            p,
            n,
            log_z=2.0,
            num_data=30,
            temperature=0.5,
            negatives_mask=mask,
        ),
        (a, p, n),
        order=1,
        modes=("fwd", "rev"),
    )
    check_grads(
        lambda a, p: contrastive.in_batch_info_nce(
            a, p, temperature=0.5, labels=np.array([0, 1, 0])
        ),
        (a, p),
        order=1,
        modes=("fwd", "rev"),
    )


def test_float_labels_need_gap():
  with pytest.raises(ValueError):
    contrastive.label_eligible(np.array([0.5]), np.array([1.0, 2.0]))
  got = contrastive.label_eligible(
      np.array([1.0]), np.array([1.2, 2.5, 0.1]), label_gap=0.5
  )
  np.testing.assert_array_equal(got, [[False, True, True]])


def test_shape_errors():
  a, p, n, _ = _data(9, 2, 3, 4)
  with pytest.raises(ValueError):
    contrastive.info_nce(a, p[:, :3], n, temperature=0.1)
  with pytest.raises(ValueError):
    contrastive.info_nce(
        a, p, n, temperature=0.1, negatives_mask=np.ones((2, 2), bool)
    )


def test_golden_numbers():
  # Hand-derived: a = p = e1, one negative e2, tau = 1:
  #   InfoNCE = log(e^1 + e^0) - 1 = log(1 + e^-1) = 0.3132616875...
  #   CRD NCE with log Z = 0, N = 1, K = 1 (c = 1), eps = 0:
  #   -[log(e/(e+1)) + log(1/(1+1))] = log(1 + e^-1) + log 2 = 1.0064088681...
  e1, e2 = np.array([[1.0, 0.0]], np.float32), np.array(
      [[[0.0, 1.0]]], np.float32
  )
  np.testing.assert_allclose(
      contrastive.info_nce(e1, e1, e2, temperature=1.0),
      [0.31326168751822286],
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      contrastive.crd_nce(
          e1, e1, e2, log_z=0.0, num_data=1, temperature=1.0, eps=0.0
      ),
      [1.0064088680781683],
      rtol=1e-6,
  )
