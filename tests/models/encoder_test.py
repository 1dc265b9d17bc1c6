"""Encoder: parity with transformers (PyTorch), dtypes, dropout, sharding."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codir_jax.models import Encoder
from codir_jax.models import from_pretrained
from tests import builders
from tests import multidevice

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PARITY_ATOL = 1e-4
# bfloat16 has an 8-bit mantissa (relative step 2^-8 ~ 0.4%); LayerNorm'd
# hidden states are O(1), so after the embeddings and 2 layers we allow 0.1
# max-abs and 0.02 mean-abs against float32 (measured ~0.03 / ~0.005).
BF16_MAX_ABS = 0.1
BF16_MEAN_ABS = 0.02
VOCABULARY = {"vocab", "embed", "heads", "mlp", None}


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_base_parity_with_transformers(model_type, tmp_path):
  """Every hidden state, attention and the pooler match HF in float32.

  Padding positions are compared too: both implementations let padded
  queries attend to the valid keys, so they agree everywhere.
  """
  cls = (
      transformers.BertModel
      if model_type == "bert"
      else transformers.RobertaModel
  )
  hf = builders.random_hf_model(cls, builders.tiny_hf_config(model_type))
  hf.save_pretrained(tmp_path)
  ours = from_pretrained(tmp_path)
  batch = builders.padded_batch(ours.config)
  with torch.no_grad():
    ref = hf(
        **builders.to_torch(batch),
        output_hidden_states=True,
        output_attentions=True,
    )
  out = ours(**batch, output_attentions=True)
  assert len(out.hidden_states) == ours.config.num_layers + 1
  errs = [
      builders.max_abs(a, b)
      for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
  ]
  att = [
      builders.max_abs(a, b)
      for a, b in zip(out.attentions, ref.attentions, strict=True)
  ]
  pool = builders.max_abs(ours.pool(out.last_hidden_state), ref.pooler_output)
  print(
      f"MAXABS base/{model_type}: hidden {max(errs):.2e} "
      f"attn {max(att):.2e} pooler {pool:.2e}"
  )
  assert max(errs) < PARITY_ATOL and max(att) < PARITY_ATOL
  assert pool < PARITY_ATOL
  np.testing.assert_array_equal(out.last_hidden_state, out.hidden_states[-1])


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_bfloat16_close_to_float32(model_type):
  config = builders.tiny_config(model_type)
  f32 = builders.randomize(Encoder(config, rngs=nnx.Rngs(0)))
  bf16 = Encoder(
      config.replace(dtype=jnp.bfloat16, param_dtype=jnp.bfloat16),
      rngs=nnx.Rngs(0),
  )
  nnx.update(
      bf16,
      jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32, nnx.Param)),
  )
  assert bf16.layers[0].query.kernel[...].dtype == jnp.bfloat16
  batch = builders.padded_batch(config)
  ref = f32(**batch, output_attentions=True)
  out = bf16(**batch, output_attentions=True)
  assert out.last_hidden_state.dtype == jnp.bfloat16
  assert out.attentions[0].dtype == jnp.float32  # softmax in float32
  for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
    d = np.abs(np.asarray(a, np.float32) - np.asarray(b))
    assert np.isfinite(np.asarray(a, np.float32)).all()
    assert d.max() < BF16_MAX_ABS and d.mean() < BF16_MEAN_ABS, d.max()
  last = np.asarray(out.last_hidden_state, np.float32)
  d = np.abs(last - np.asarray(ref.last_hidden_state))
  print(f"MAXABS bf16/{model_type}: max {d.max():.2e} mean {d.mean():.2e}")


def test_only_params_and_pure_jit():
  config = builders.tiny_config(
      "bert", hidden_dropout=0.1, attention_dropout=0.1
  )
  model = builders.randomize(Encoder(config, rngs=nnx.Rngs(0)))
  assert not jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))
  graphdef, params = nnx.split(model)
  batch = builders.padded_batch(config)

  @jax.jit
  def forward(params, batch, rng):
    return nnx.merge(graphdef, params)(
        **batch, deterministic=False, dropout_rng=rng
    ).last_hidden_state

  k1, k2 = jax.random.key(1), jax.random.key(2)
  a, b, c = (
      forward(params, batch, k1),
      forward(params, batch, k1),
      forward(params, batch, k2),
  )
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  det = model(**batch).last_hidden_state
  assert np.abs(np.asarray(a) - np.asarray(det)).max() > 1e-3
  np.testing.assert_allclose(
      model(**batch, dropout_rng=k1).last_hidden_state, det
  )
  with pytest.raises(ValueError, match="dropout_rng"):
    model(**batch, deterministic=False)


def test_params_carry_logical_axis_names():
  model = Encoder(
      builders.tiny_config("bert"), rngs=nnx.Rngs(0), add_pooler=True
  )
  specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
  leaves = jax.tree.leaves(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
  )
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  for spec, param in zip(leaves, params, strict=True):
    assert len(spec) == param.ndim and set(spec) <= VOCABULARY, spec
  word = specs["embeddings"]["word_embeddings"]["embedding"]
  assert tuple(word) == ("vocab", "embed")
  assert tuple(specs["layers"][0]["intermediate"]["kernel"]) == ("embed", "mlp")


def test_jit_on_8_device_mesh_matches_single_device():
  out = multidevice.run_script("""
    from flax import nnx
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    import builders
    from codir_jax.models import SequenceClassifier
    config = builders.tiny_config('roberta')
    model = builders.randomize(
        SequenceClassifier(config, 3, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    batch = builders.padded_batch(config, lengths=(12, 7, 3, 9, 1, 5, 12, 2))

    def forward(params, batch):
      logits, out = nnx.merge(graphdef, params)(**batch)
      return logits, out.hidden_states
    ref = jax.jit(forward)(params, batch)
    mesh = jax.make_mesh((8,), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
    data = NamedSharding(mesh, P('data'))
    rep = NamedSharding(mesh, P())
    sharded = jax.jit(forward, in_shardings=(rep, data))
    got = sharded(jax.device_put(params, rep), jax.device_put(batch, data))
    assert len(got[1][0].sharding.device_set) == 8
    err = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)))
    print('MAXABS mesh8', err)
    assert err < 1e-5, err
  """)
  assert "MAXABS mesh8" in out
  print(out.strip())
