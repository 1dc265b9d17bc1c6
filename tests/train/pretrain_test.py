"""CoDIR-Pre: the MLM distillation step, its FIFO banks, and the export."""

import json

from flax import nnx
import jax
import numpy as np
import pytest

from codir_jax import losses
from codir_jax import sharding
from codir_jax.train import loop
from codir_jax.train import pretrain_run
from codir_jax.train import settings
from codir_jax.train import trainer
from tests.train import assets


@pytest.fixture(scope="module")
def mlm_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("mlm")
  teacher = assets.make_mlm_teacher_dir(str(root / "teacher"))
  train = assets.write_corpus(str(root / "train.txt"), num_lines=400)
  heldout = assets.write_corpus(str(root / "heldout.txt"), num_lines=60, seed=1)
  return teacher, train, heldout


def _teacher_vectors(run, params, batch):
  """z_t computed independently: teacher forward, pool, project, norm."""
  out = run.teacher_model(
      batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
  )[1]
  pooled = losses.stack_pooled_layers(
      out.hidden_states,
      layer_ids=run.loss.teacher_layers,
      mask=batch["attention_mask"],
      pooling="mean",
  )
  head = nnx.merge(run.graphs.proj_t, params["proj_t"])
  return np.asarray(losses.l2_normalize(head(pooled)))


def _one_device():
  return sharding.make_mesh([("data", 1), ("model", 1)], jax.devices()[:1])


def _hf_mlm_accuracy(path, batches) -> float:
  """Masked-token accuracy of an HF masked LM (PyTorch) on host batches."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  model = transformers.AutoModelForMaskedLM.from_pretrained(path).eval()
  hits = count = 0
  for b in batches:
    with torch.no_grad():
      logits = model(
          input_ids=torch.tensor(b["input_ids"], dtype=torch.long),
          attention_mask=torch.tensor(b["attention_mask"], dtype=torch.long),
          token_type_ids=torch.tensor(b["token_type_ids"], dtype=torch.long),
      ).logits.numpy()
    mask = b["mlm_mask"] & b["valid"][:, None]
    hits += int((logits.argmax(-1) == b["mlm_labels"])[mask].sum())
    count += int(mask.sum())
  return hits / count


def test_fifo_queue_overwrites_oldest_first(mlm_dirs, tmp_path):
  teacher, train, heldout = mlm_dirs
  config = assets.pretrain_config(
      teacher, train, heldout, loss__negatives="bank"
  )
  mesh = sharding.make_mesh([("data", 1), ("model", 1)], jax.devices()[:1])
  run, _ = pretrain_run.build_run(
      settings.from_config(config), str(tmp_path / "w"), mesh
  )
  compiled = loop.compile_run(run)
  state = compiled.init()
  queue = state.bank["teacher"]
  assert queue.num_slots == 12 and not np.asarray(queue.valid).any()
  it = run.make_iterator()
  batches = [next(it), next(it)]
  expected = []
  for batch in batches:
    params = jax.device_get(state.params)
    expected.append(_teacher_vectors(run, params, batch))
    state, _ = compiled.train_step(
        state, sharding.put_batch(batch, mesh), compiled.teacher_params
    )
    if len(expected) == 1:
      after_first = jax.device_get(state.bank["teacher"])
  q1, q2 = after_first, jax.device_get(state.bank["teacher"])
  assert int(q1.ptr) == 8 and int(q2.ptr) == 16 % 12
  np.testing.assert_array_equal(q1.valid, [True] * 8 + [False] * 4)
  np.testing.assert_allclose(q1.vectors[:8], expected[0], atol=1e-5)
  # Step 2 writes rows 0..3 into the free slots 8..11, then wraps around:
  # rows 4..7 overwrite slots 0..3, the oldest; slots 4..7 survive.
  assert np.asarray(q2.valid).all()
  np.testing.assert_allclose(q2.vectors[8:12], expected[1][:4], atol=1e-5)
  np.testing.assert_allclose(q2.vectors[0:4], expected[1][4:8], atol=1e-5)
  np.testing.assert_array_equal(q2.vectors[4:8], q1.vectors[4:8])
  # The student queue is written by the same rule.
  s2 = jax.device_get(state.bank["student"])
  assert int(s2.ptr) == 4 and np.asarray(s2.valid).all()


def test_pretraining_loss_falls_over_50_steps(mlm_dirs, tmp_path):
  teacher, train, heldout = mlm_dirs
  # The queue (32 slots) is full after the first step, so the contrastive
  # term's scale does not drift as it fills; the MLM and KD terms learn.
  config = assets.pretrain_config(
      teacher,
      train,
      heldout,
      optim__num_steps=50,
      log__every_steps=10,
      optim__batch_size=32,
      optim__lr=3e-3,
      bank__queue_size=32,
      loss__negatives="bank",
  )
  summary = trainer.train_and_evaluate(config, str(tmp_path / "w"))
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train_rows] == [10, 20, 30, 40, 50]
  first, last = train_rows[0], train_rows[-1]
  for key in ("loss", "task", "kd", "crd"):
    assert np.isfinite(last[key]), (key, last)
  losses_ = [r["loss"] for r in train_rows]
  assert last["loss"] < first["loss"], losses_
  assert min(losses_[1:]) < losses_[0], losses_
  assert last["task"] < first["task"] - 0.1, [r["task"] for r in train_rows]
  # Both MLM accuracies equal what transformers computes from the exports
  # on the same fixed evaluation batches.
  _, batches = pretrain_run.build_run(
      settings.from_config(config), str(tmp_path / "b"), _one_device()
  )
  assert summary["dev"]["mlm_accuracy"] == pytest.approx(
      _hf_mlm_accuracy(summary["export"], batches), abs=1e-9
  )
  assert summary["teacher_dev"]["mlm_accuracy"] == pytest.approx(
      _hf_mlm_accuracy(teacher, batches), abs=1e-9
  )


def test_exported_student_matches_in_transformers(mlm_dirs, tmp_path):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  teacher, train, heldout = mlm_dirs
  config = assets.pretrain_config(
      teacher, train, heldout, loss__negatives="in_batch"
  )
  summary = trainer.train_and_evaluate(config, str(tmp_path / "w"))
  export = summary["export"]
  hf, info = transformers.AutoModelForMaskedLM.from_pretrained(
      export, output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  hf.eval()
  from codir_jax import models  # pylint: disable=g-import-not-at-top

  ours = models.from_pretrained(export, head="masked_lm")
  tok = models.load_tokenizer(export)
  enc = tok(
      ["the film is not good", "its plot is dull , but the cast is" " superb"],
      padding=True,
      return_tensors="np",
  )
  logits, _ = ours(enc["input_ids"], enc["attention_mask"])
  with torch.no_grad():
    ref = hf(
        input_ids=torch.tensor(enc["input_ids"]),
        attention_mask=torch.tensor(enc["attention_mask"]),
    ).logits
  mask = enc["attention_mask"].astype(bool)
  diff = np.abs(np.asarray(logits) - ref.numpy())[mask]
  assert diff.max() < 1e-4, diff.max()


def test_pretrained_student_fine_tunes_with_codir_fine(
    mlm_dirs, tiny_dirs, tmp_path
):
  """The paper's CoDIR-Pre row: pre-distilled student -> CoDIR-Fine."""
  teacher, train, heldout = mlm_dirs
  pre = trainer.train_and_evaluate(
      assets.pretrain_config(teacher, train, heldout), str(tmp_path / "pre")
  )
  classifier, data = tiny_dirs
  config = assets.tiny_config(classifier, data, optim__num_steps=2)
  config.student.init = "pretrained"
  config.student.path = pre["export"]
  summary = trainer.train_and_evaluate(config, str(tmp_path / "fine"))
  assert summary["steps"] == 2
  assert summary["dev"]["accuracy"] == pytest.approx(
      assets.hf_dev_accuracy(summary["export"], data), abs=1e-9
  )
  from codir_jax import models  # pylint: disable=g-import-not-at-top

  student = models.from_pretrained(summary["export"], head="classification")
  assert student.config.num_layers == 1  # The pre-distilled depth.


@pytest.mark.parametrize(
    "override, message",
    [
        ({"bank__label_aware": True}, "label_aware"),
        (
            {"bank__queue_size": 4, "loss__negatives": "bank"},
            "queue_size = 4 must be >= the global batch",
        ),
        (
            {"loss__objective": "nce", "loss__negatives": "bank"},
            "objective='info_nce'",
        ),
        ({"optim__num_steps": 0}, "num_steps > 0"),
    ],
)
def test_pretraining_bad_settings_are_named(
    mlm_dirs, tmp_path, override, message
):
  teacher, train, heldout = mlm_dirs
  config = assets.pretrain_config(teacher, train, heldout, **override)
  with pytest.raises(ValueError, match=message):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_teacher_without_mlm_head_is_refused(tiny_dirs, mlm_dirs, tmp_path):
  classifier, _ = tiny_dirs
  _, train, heldout = mlm_dirs
  config = assets.pretrain_config(classifier, train, heldout)
  with pytest.raises(ValueError, match="ForMaskedLM"):
    trainer.train_and_evaluate(config, str(tmp_path / "w"))
