"""make_student: layer selection, copies, validation."""

from flax import nnx
import jax
import numpy as np
import pytest

from codir_jax.models import default_layers
from codir_jax.models import Encoder
from codir_jax.models import from_pretrained
from codir_jax.models import make_student
from codir_jax.models import MaskedLM
from tests import builders

PARITY_ATOL = 1e-4


def test_default_layers():
  assert default_layers(6) == [2, 4, 6]
  assert default_layers(12) == [2, 4, 6, 8, 10, 12]
  assert default_layers(5) == [2, 4]


def test_student_runs_the_selected_teacher_layers():
  config = builders.tiny_config("roberta", num_layers=5)
  teacher = builders.randomize(
      Encoder(config, rngs=nnx.Rngs(0), add_pooler=True)
  )
  student = make_student(teacher, [1, 4, 5])
  assert isinstance(student, Encoder) and student.config.num_layers == 3
  assert student.pooler is not None
  batch = builders.padded_batch(config)
  out = student(**batch)
  # Reference: the teacher's embeddings, then its layers 1, 4, 5 by hand.
  mask_bias = np.where(
      batch["attention_mask"][:, None, None, :] > 0,
      0.0,
      np.finfo(np.float32).min,
  ).astype(np.float32)
  x = teacher.embeddings(
      batch["input_ids"], batch["token_type_ids"], deterministic=True, rng=None
  )
  np.testing.assert_array_equal(out.hidden_states[0], x)
  for i, l in enumerate([1, 4, 5]):
    x, _ = teacher.layers[l - 1](x, mask_bias, deterministic=True, rng=None)
    np.testing.assert_allclose(out.hidden_states[i + 1], x, atol=1e-6)
  # Arrays are copies: donating student buffers must not free the teacher's.
  s = student.embeddings.word_embeddings.embedding[...]
  t = teacher.embeddings.word_embeddings.embedding[...]
  np.testing.assert_array_equal(s, t)
  assert s.unsafe_buffer_pointer() != t.unsafe_buffer_pointer()


def test_student_matches_truncated_transformers_model(tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  config = builders.tiny_hf_config("bert", num_labels=3, num_layers=4)
  hf = builders.random_hf_model(
      transformers.BertForSequenceClassification, config
  )
  hf.save_pretrained(tmp_path)
  student = make_student(from_pretrained(tmp_path, head="classification"))
  # Default 4 -> 2 keeps HF layers 2 and 4 (0-based 1 and 3).
  hf.bert.encoder.layer = torch.nn.ModuleList(
      [hf.bert.encoder.layer[1], hf.bert.encoder.layer[3]]
  )
  hf.config.num_hidden_layers = 2
  batch = builders.padded_batch(student.config)
  with torch.no_grad():
    ref = hf(**builders.to_torch(batch), output_hidden_states=True)
  logits, out = student(**batch)
  assert len(out.hidden_states) == 3 and student.num_labels == 3
  err = max(
      [builders.max_abs(logits, ref.logits)]
      + [
          builders.max_abs(a, b)
          for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
      ]
  )
  print(f"MAXABS student vs truncated HF: {err:.2e}")
  assert err < PARITY_ATOL


def test_masked_lm_student_keeps_head():
  teacher = builders.randomize(
      MaskedLM(builders.tiny_config("bert", num_layers=4), rngs=nnx.Rngs(0))
  )
  student = make_student(teacher, [3])
  assert isinstance(student, MaskedLM)
  for a, b in zip(
      jax.tree.leaves(nnx.state(student.transform)),
      jax.tree.leaves(nnx.state(teacher.transform)),
  ):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
      student.encoder.layers[0].query.kernel[...],
      teacher.encoder.layers[2].query.kernel[...],
  )


@pytest.mark.parametrize(
    "layers,match",
    [
        ([], "No student layers"),
        ([0, 2], "out of range"),
        ([2, 5], "out of range"),
        ([3, 1], "increasing"),
        ([2, 2], "increasing"),
        ([1.0], "ints"),
    ],
)
def test_bad_layers_raise(layers, match):
  teacher = Encoder(
      builders.tiny_config("bert", num_layers=4), rngs=nnx.Rngs(0)
  )
  with pytest.raises(ValueError, match=match):
    make_student(teacher, layers)
