"""Tests of codir_jax.losses.representations and reductions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from codir_jax.losses import reductions
from codir_jax.losses import representations as rep
from tests.reference import losses_reference as ref

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("b,t,d", [(1, 1, 2), (3, 7, 5), (4, 16, 8)])
def test_masked_mean_pool_matches_reference(b, t, d):
  rng = np.random.default_rng(b * t)
  h = rng.normal(size=(b, t, d)).astype(np.float32)
  mask = (rng.random((b, t)) > 0.4).astype(np.int32)
  mask[0, 0] = 1
  np.testing.assert_allclose(
      rep.masked_mean_pool(h, mask), ref.masked_mean_pool(h, mask), **TOL
  )


def test_pool_padding_and_all_masked_row():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(2, 4, 3)).astype(np.float32)
  mask = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
  h_junk = h.copy()
  h_junk[0, 2:] = 1e30  # padded tokens cannot matter
  out = rep.masked_mean_pool(h_junk, mask)
  np.testing.assert_allclose(out[0], h[0, :2].mean(0), **TOL)
  np.testing.assert_array_equal(out[1], 0.0)
  g = jax.grad(lambda h: rep.masked_mean_pool(h, mask).sum())(h)
  assert np.isfinite(g).all()
  np.testing.assert_array_equal(rep.first_token_pool(h), h[:, 0])


def test_layer_maps():
  assert rep.teacher_layer_map(num_student_layers=6, num_teacher_layers=12) == [
      2,
      4,
      6,
      8,
      10,
      12,
  ]
  assert rep.teacher_layer_map(
      num_student_layers=6, num_teacher_layers=12, variant="released"
  ) == [1, 3, 5, 7, 9, 11]
  assert rep.teacher_layer_map(num_student_layers=3, num_teacher_layers=6) == [
      2,
      4,
      6,
  ]
  assert rep.teacher_layer_map(num_student_layers=4, num_teacher_layers=4) == [
      1,
      2,
      3,
      4,
  ]
  assert rep.student_layer_ids(num_student_layers=3) == [1, 2, 3]
  for kw in [
      dict(num_student_layers=5, num_teacher_layers=12),
      dict(num_student_layers=6, num_teacher_layers=3),
      dict(num_student_layers=6, num_teacher_layers=12, variant="nope"),
  ]:
    with pytest.raises(ValueError):
      rep.teacher_layer_map(**kw)
  for ids in [[0, 1], [1, 1], [13], []]:
    with pytest.raises(ValueError):
      rep.check_layer_ids(ids, num_layers=12)
  with pytest.raises(ValueError):
    rep.get_pooling("max")


def test_stack_concat_project_normalize():
  rng = np.random.default_rng(1)
  b, t, d, p = 2, 5, 4, 3
  hs = tuple(
      rng.normal(size=(b, t, d)).astype(np.float32) for _ in range(5)
  )  # L = 4
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
  st = rep.stack_pooled_layers(hs, layer_ids=[2, 4], mask=mask)
  assert st.shape == (b, 2, d)
  np.testing.assert_allclose(st[:, 1], ref.masked_mean_pool(hs[4], mask), **TOL)
  st_first = rep.stack_pooled_layers(
      hs, layer_ids=[1], mask=mask, pooling="first"
  )
  np.testing.assert_allclose(st_first[:, 0], hs[1][:, 0])
  cat = rep.concat_layers(st)
  np.testing.assert_allclose(cat, np.concatenate([st[:, 0], st[:, 1]], axis=1))
  w = rng.normal(size=(2 * d, p)).astype(np.float32)
  bias = rng.normal(size=(p,)).astype(np.float32)
  z = rep.codir_representation(
      hs, layer_ids=[2, 4], mask=mask, kernel=w, bias=bias
  )
  want = ref.l2_normalize(np.asarray(cat, np.float64) @ w + bias)
  np.testing.assert_allclose(z, want, **TOL)
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-6)
  with pytest.raises(ValueError):
    rep.stack_pooled_layers(hs, layer_ids=[5], mask=mask)


def test_l2_normalize_zero_and_grads():
  x = np.zeros((2, 3), np.float32)
  assert np.all(rep.l2_normalize(x) == 0)
  g = jax.grad(lambda x: rep.l2_normalize(x).sum())(x)
  assert np.isfinite(g).all()
  with jax.enable_x64(True):
    x = np.random.default_rng(2).normal(size=(3, 4))
    check_grads(
        lambda x: rep.l2_normalize(x), (x,), order=1, modes=("fwd", "rev")
    )
    h = np.random.default_rng(3).normal(size=(2, 3, 4))
    m = np.array([[1, 1, 0], [1, 0, 0]])
    check_grads(
        lambda h: rep.masked_mean_pool(h, m),
        (h,),
        order=1,
        modes=("fwd", "rev"),
    )
  assert rep.l2_normalize(jnp.ones((2, 2), jnp.bfloat16)).dtype == jnp.float32


def test_masked_sum_count():
  v = np.array([1.0, 2.0, np.nan, 4.0], np.float32)
  mask = np.array([True, True, False, True])
  s, c = reductions.masked_sum_count(v, mask=mask)
  assert (float(s), float(c)) == ref.masked_sum_count(v, mask) == (7.0, 3.0)
  g = jax.grad(lambda v: reductions.masked_sum_count(v, mask=mask)[0])(v)
  np.testing.assert_array_equal(g, [1, 1, 0, 1])
  s, c = reductions.masked_sum_count(v[:2])
  assert (float(s), float(c)) == (3.0, 2.0)
  assert float(reductions.masked_mean(v, mask=mask)) == pytest.approx(7 / 3)
  assert float(reductions.masked_mean(v, mask=np.zeros(4, bool))) == 0.0
