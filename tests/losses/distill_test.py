"""Tests of codir_jax.losses.distill against the loop-style reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from codir_jax.losses import distill
from tests.reference import losses_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b,c", [(1, 2), (5, 3), (7, 30)])
@pytest.mark.parametrize("rho", [1.0, 2.0, 4.0])
def test_kd_matches_reference(b, c, rho):
  rng = np.random.default_rng(b * c)
  s = rng.normal(size=(b, c)).astype(np.float32) * 3
  t = rng.normal(size=(b, c)).astype(np.float32) * 3
  np.testing.assert_allclose(
      distill.kd_loss(student_logits=s, teacher_logits=t, temperature=rho),
      ref.kd_loss(s, t, rho),
      **TOL,
  )


def test_kd_minimum_at_teacher_and_leading_dims():
  rng = np.random.default_rng(0)
  t = rng.normal(size=(2, 3, 5)).astype(np.float32)
  np.testing.assert_allclose(
      distill.kd_loss(student_logits=t, teacher_logits=t), 0.0, atol=1e-6
  )
  s = t + rng.normal(size=t.shape).astype(np.float32)
  out = distill.kd_loss(student_logits=s, teacher_logits=t)
  assert out.shape == (2, 3) and np.all(out > 0)
  # Extreme logits (teacher prob underflows to 0) stay finite.
  big = np.array([[1e4, -1e4, 0.0]], np.float32)
  v, g = jax.value_and_grad(
      lambda s: distill.kd_loss(student_logits=s, teacher_logits=big).sum()
  )(np.zeros((1, 3), np.float32))
  assert np.isfinite(v) and np.isfinite(g).all()


@pytest.mark.parametrize("b,c", [(1, 2), (6, 3), (4, 11)])
def test_cross_entropy_matches_reference(b, c):
  rng = np.random.default_rng(b + c)
  logits = rng.normal(size=(b, c)).astype(np.float32) * 4
  labels = rng.integers(0, c, size=b)
  np.testing.assert_allclose(
      distill.cross_entropy(logits=logits, labels=labels),
      ref.cross_entropy(logits, labels),
      **TOL,
  )


def test_cross_entropy_padding_label_is_finite():
  out = distill.cross_entropy(
      logits=np.zeros((2, 3), np.float32), labels=np.array([1, -1])
  )
  assert np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(4,), (4, 1), (3, 5)])
def test_mse_matches_reference(shape):
  rng = np.random.default_rng(len(shape))
  s = rng.normal(size=shape).astype(np.float32)
  y = rng.normal(size=shape[:1] if shape == (4, 1) else shape).astype(
      np.float32
  )
  got = distill.mse(predictions=s, targets=y)
  assert got.shape == (shape[0],)
  np.testing.assert_allclose(got, ref.mse(s, y), **TOL)


@pytest.mark.parametrize("b,l,d", [(1, 1, 3), (3, 6, 8), (5, 2, 16)])
def test_pkd_matches_reference(b, l, d):
  rng = np.random.default_rng(b * l * d)
  s = rng.normal(size=(b, l, d)).astype(np.float32)
  t = rng.normal(size=(b, l, d)).astype(np.float32) * 5
  np.testing.assert_allclose(
      distill.pkd_loss(student_pooled=s, teacher_pooled=t),
      ref.pkd_loss(s, t),
      **TOL,
  )
  # Scale invariance: only directions matter.
  np.testing.assert_allclose(
      distill.pkd_loss(student_pooled=3 * s, teacher_pooled=t),
      ref.pkd_loss(s, t),
      **TOL,
  )


def test_pkd_zero_rows_finite_grads():
  s = np.zeros((2, 2, 4), np.float32)
  t = np.ones((2, 2, 4), np.float32)
  g = jax.grad(
      lambda s: distill.pkd_loss(student_pooled=s, teacher_pooled=t).sum()
  )(s)
  assert np.isfinite(g).all()


def test_bf16_inputs():
  rng = np.random.default_rng(1)
  s = rng.normal(size=(4, 5)).astype(np.float32)
  t = rng.normal(size=(4, 5)).astype(np.float32)
  bf = lambda x: jnp.asarray(x, jnp.bfloat16)
  # bf16 rounding of logits (rel. 2^-8) moves KD by < 2e-2 for |logits| ~ 1.
  got = distill.kd_loss(student_logits=bf(s), teacher_logits=bf(t))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref.kd_loss(s, t, 2.0), atol=2e-2)
  np.testing.assert_allclose(
      distill.cross_entropy(logits=bf(s), labels=np.arange(4)),
      ref.cross_entropy(s, np.arange(4)),
      atol=2e-2,
  )


def test_check_grads():
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    check_grads(
        lambda s, t: distill.kd_loss(student_logits=s, teacher_logits=t),
        (s, t),
        order=1,
        modes=("fwd", "rev"),
    )
    check_grads(
        lambda s: distill.cross_entropy(logits=s, labels=np.array([0, 3, 1])),
        (s,),
        order=1,
        modes=("fwd", "rev"),
    )
    check_grads(
        lambda s, t: distill.mse(predictions=s, targets=t),
        (s, t),
        order=1,
        modes=("fwd", "rev"),
    )
    sp, tp = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    check_grads(
        lambda s, t: distill.pkd_loss(student_pooled=s, teacher_pooled=t),
        (sp, tp),
        order=1,
        modes=("fwd", "rev"),
    )
