"""Heads: classification, regression and masked-LM logits match transformers."""

from flax import nnx
import jax
import numpy as np
import pytest

from codir_jax.models import from_pretrained
from codir_jax.models import MaskedLM
from codir_jax.models import SequenceClassifier
from tests import builders

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PARITY_ATOL = 1e-4


def _hf_classes(model_type):
  if model_type == "bert":
    return (
        transformers.BertForSequenceClassification,
        transformers.BertForMaskedLM,
    )
  return (
      transformers.RobertaForSequenceClassification,
      transformers.RobertaForMaskedLM,
  )


@pytest.mark.parametrize("num_labels", [3, 1])
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_classification_parity(model_type, num_labels, tmp_path):
  cls, _ = _hf_classes(model_type)
  hf = builders.random_hf_model(
      cls, builders.tiny_hf_config(model_type, num_labels=num_labels), seed=1
  )
  hf.save_pretrained(tmp_path)
  ours = from_pretrained(tmp_path, head="classification")
  assert isinstance(ours, SequenceClassifier)
  assert ours.num_labels == num_labels  # read from config.json
  batch = builders.padded_batch(ours.config, seed=1)
  with torch.no_grad():
    ref = hf(**builders.to_torch(batch), output_hidden_states=True)
  logits, out = ours(**batch)
  assert logits.shape == (4, num_labels) and logits.dtype == np.float32
  err = builders.max_abs(logits, ref.logits)
  hid = max(
      builders.max_abs(a, b)
      for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
  )
  print(
      f"MAXABS cls/{model_type}/{num_labels}: logits {err:.2e} "
      f"hidden {hid:.2e}"
  )
  assert err < PARITY_ATOL and hid < PARITY_ATOL


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_masked_lm_parity(model_type, tmp_path):
  _, cls = _hf_classes(model_type)
  hf = builders.random_hf_model(
      cls, builders.tiny_hf_config(model_type), seed=2
  )
  hf.save_pretrained(tmp_path)
  ours = from_pretrained(tmp_path, head="masked_lm")
  assert isinstance(ours, MaskedLM)
  batch = builders.padded_batch(ours.config, seed=2)
  with torch.no_grad():
    ref = hf(**builders.to_torch(batch))
  logits, _ = ours(**batch)
  assert logits.shape == (4, 12, builders.VOCAB)
  err = builders.max_abs(logits, ref.logits)
  print(f"MAXABS mlm/{model_type}: logits {err:.2e}")
  assert err < PARITY_ATOL


def test_masked_lm_decoder_is_tied():
  model = builders.randomize(
      MaskedLM(builders.tiny_config("roberta"), rngs=nnx.Rngs(0))
  )
  batch = builders.padded_batch(model.config)
  base, _ = model(**batch)
  emb = model.encoder.embeddings.word_embeddings.embedding
  emb[...] = emb[...].at[5].add(1.0)
  moved, _ = model(**batch)
  # Changing one embedding row moves that vocabulary entry's logits.
  assert np.abs(np.asarray(moved - base)[..., 5]).max() > 1e-2
  assert "decoder" not in str(jax.tree.structure(nnx.state(model)))


def test_dropout_in_heads_needs_rng():
  model = SequenceClassifier(
      builders.tiny_config("bert", hidden_dropout=0.5), 2, rngs=nnx.Rngs(0)
  )
  batch = builders.padded_batch(model.config)
  with pytest.raises(ValueError, match="dropout_rng"):
    model(**batch, deterministic=False)
  a, _ = model(**batch, deterministic=False, dropout_rng=jax.random.key(0))
  b, _ = model(**batch)
  assert np.abs(np.asarray(a - b)).max() > 1e-4
