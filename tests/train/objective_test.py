"""The trainer's objective against a NumPy computation.

For each variant, the trainer runs two steps on a tiny dropout-free
teacher/student whose batches end with a padding row (so masking is checked
too). The test records the first step (its batch, the state before it, the
step's metrics) and recomputes every term and the total from the models'
outputs, the projection heads and the banks as they were before the step
(tests/reference/objective_reference.py), with the negative ids the step's
key draws. The step's metrics and the row the trainer logged for step 1
must both match; every step's row must hold exactly the variant's terms,
all finite.
"""

import dataclasses
import functools
import json
import os

from flax import nnx
import jax
import numpy as np
import pytest

from codir_jax.losses import memory_bank
from codir_jax.train import loop
from codir_jax.train import task_data
from codir_jax.train import trainer
from tests.reference import objective_reference as obj_ref
from tests.train import assets

_STSB_HEADER = (
    "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2"
    "\tsentence1\tsentence2\tscore\n"
)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  """Dropout-free tiny teachers and students (2 classes, STS-B), tasks."""
  root = tmp_path_factory.mktemp("objective")
  # Confident heads and an independent 1-layer student: KD is far from 0,
  # so a wrong weight on any term shows in the total.
  make = functools.partial(assets.make_teacher_dir, dropout=0.0, head_std=3.0)
  teacher = make(str(root / "teacher"))
  reg = make(str(root / "reg"), num_labels=1, seed=1)
  students = {
      2: make(str(root / "student"), num_layers=1, seed=5),
      1: make(str(root / "reg_student"), num_labels=1, num_layers=1, seed=6),
  }
  data = assets.make_glue_dir(str(root / "glue"))
  os.makedirs(root / "glue" / "STS-B")
  texts, _ = task_data.demo_sentences(60, 3)
  rng = np.random.default_rng(0)
  for split, rows in (("train", range(0, 40)), ("dev", range(40, 60))):
    with open(root / "glue" / "STS-B" / f"{split}.tsv", "w") as f:
      f.write(_STSB_HEADER)
      for i in rows:
        score = rng.uniform(0, 5)
        f.write(
            f"{i}\tg\tf\ty\t{i}\ts\ts\t{texts[i]}\t{texts[59 - i]}"
            f"\t{score:.3f}\n"
        )
  return teacher, reg, data, students


# No 'kd' case: its step is pkd's with mu = 0 (pkd checks the task and KD
# terms and their weights, codir the omission of a zero-weight PKD term);
# trainer_test checks the KD variant's rows.
_VARIANTS = {
    "pkd": ("variant=pkd", {}),
    "codir": ("variant=codir", {}),
    "codir_inbatch": ("variant=codir_inbatch", {}),
    # The released code: first-token pooling, odd layers, CRD NCE with its
    # first-batch log Z, bank positives, shared ids, lambda / B.
    "released": (
        "variant=codir",
        dict(
            loss__pooling="first",
            loss__teacher_layers="odd",
            loss__objective="nce",
            loss__positive="bank",
            loss__crd_batch_scaled=True,
            bank__shared_negatives=True,
        ),
    ),
    "regression": ("variant=codir", dict(task__name="stsb")),
}
# The distillation terms each variant logs (independent of the reference).
_TERMS = {
    "pkd": {"kd", "pkd"},
    "codir": {"kd", "crd"},
    "codir_inbatch": {"kd", "crd"},
    "released": {"kd", "crd"},
    "regression": {"kd", "crd"},
}


def _setting(run, config) -> obj_ref.Setting:
  l = config.loss
  return obj_ref.Setting(
      beta=l.kd_weight,
      rho=l.kd_temperature,
      lam=l.crd_weight,
      mu=l.pkd_weight,
      tau=l.temperature,
      pooling=l.pooling,
      # A 1-layer student of a 2-layer teacher: 'even' maps to layer 2,
      # 'odd' to layer 1 (METHOD.md).
      student_layers=(1,),
      teacher_layers=(1,) if l.teacher_layers == "odd" else (2,),
      negatives=l.negatives,
      objective=l.objective,
      positive=l.positive,
      regression=config.task.name == "stsb",
      mlm=False,
      batch_scaled=l.crd_batch_scaled,
      num_data=run.bank_slots,
  )


class _PadLastRow:
  """A run's batch iterator whose batches end with a padding row.

  Keeps the first batch (step 1's) in `seen`; the iterator's state methods
  pass through, so checkpoints are unchanged.
  """

  def __init__(self, it, seen):
    self._it, self._seen = it, seen

  def __iter__(self):
    return self

  def __next__(self):
    batch = dict(next(self._it))
    batch["valid"] = np.asarray(batch["valid"]).copy()
    batch["valid"][-1] = False  # A padding row must not count.
    self._seen.setdefault("batch", batch)
    return batch

  def __getattr__(self, name):
    return getattr(self._it, name)


def _train(config, workdir, monkeypatch):
  """Runs the trainer; returns (summary, train rows, what step 1 saw).

  `seen` holds the run, step 1's host batch, the state before step 1 and
  the teacher's parameters (both fetched before the step donates them), and
  the step's metrics.
  """
  seen = {}
  fit, compile_run = loop.fit, loop.compile_run

  def padded_fit(run, on_ready=None):
    make = run.make_iterator
    run = dataclasses.replace(
        run, make_iterator=lambda: _PadLastRow(make(), seen)
    )
    seen["run"] = run
    return fit(run, on_ready)

  def recording_compile_run(run):
    compiled = compile_run(run)
    jitted = compiled.train_step

    def train_step(state, batch, teacher_params):
      if "metrics" in seen:
        return jitted(state, batch, teacher_params)
      seen["before"] = jax.device_get(state)
      seen["teacher_params"] = jax.device_get(teacher_params)
      new, metrics = jitted(state, batch, teacher_params)
      seen["metrics"] = jax.device_get(metrics)
      return new, metrics

    return dataclasses.replace(compiled, train_step=train_step)

  monkeypatch.setattr(loop, "fit", padded_fit)
  monkeypatch.setattr(loop, "compile_run", recording_compile_run)
  summary = trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [r for r in map(json.loads, f) if r["split"] == "train"]
  return summary, rows, seen


def _outputs(graphdef, params, batch):
  logits, out = nnx.merge(graphdef, params)(
      batch["input_ids"],
      batch["attention_mask"],
      batch["token_type_ids"],
      deterministic=True,
  )
  return np.asarray(logits), [np.asarray(h) for h in out.hidden_states]


def _negatives(run, key, bank, batch):
  """The ids one direction's sampler draws with `key` ([B, K], mask)."""
  valid = batch["valid"]
  gap = run.loss.regression_gap if run.loss.is_regression else None
  ids, mask = memory_bank.sample_negatives(
      bank,
      rng=key,
      query_ids=np.where(valid, batch["example_ids"], 0),
      query_labels=batch["labels"],
      num_negatives=run.loss.num_negatives,
      label_aware=True,
      label_gap=gap,
  )
  return np.asarray(ids), np.asarray(mask)


def _step_one(seen):
  """Step 1 as the reference needs it.

  Returns (per-term means the step computed, the step's (student, teacher)
  bank keys, and the reference's common keyword arguments: both models'
  outputs and the projection heads).
  """
  run, before, batch = seen["run"], seen["before"], seen["batch"]
  step_key = jax.random.fold_in(before.rng, before.step)
  _, bank_key = jax.random.split(step_key)
  keys = jax.random.split(bank_key)
  got = {
      k: float(s) / max(float(c), 1.0) for k, (s, c) in seen["metrics"].items()
  }
  s_logits, s_hidden = _outputs(
      run.graphs.student, before.params["student"], batch
  )
  t_logits, t_hidden = _outputs(
      run.graphs.teacher, seen["teacher_params"], batch
  )
  common = dict(
      s_logits=s_logits,
      t_logits=t_logits,
      s_hidden=s_hidden,
      t_hidden=t_hidden,
      attention_mask=batch["attention_mask"],
      valid=batch["valid"],
      example_ids=batch["example_ids"],
  )
  for side in ("proj_s", "proj_t"):
    if side in before.params:
      p = before.params[side]
      common[side] = (p["kernel"][...], p["bias"][...])
  return got, keys, common


def _check(want, got, row, name):
  """The step's metrics and the logged row of step 1 equal `want`."""
  for term, value in want.items():
    for where, have in (("step", got), ("logged row", row)):
      np.testing.assert_allclose(
          have[term],
          value,
          rtol=2e-5,
          atol=2e-6,
          err_msg=f"{name}: {term} ({where})",
      )
  assert set(want) <= set(got)


@pytest.mark.parametrize("name", sorted(_VARIANTS))
def test_every_term_and_the_total_match_numpy(
    dirs, tmp_path, monkeypatch, name
):
  teacher, reg, data, students = dirs
  arg, kw = _VARIANTS[name]
  kw = dict(kw)
  student = students[2]
  if kw.get("task__name") == "stsb":
    teacher, student = reg, students[1]
  kw.update(student__init="pretrained", student__path=student)
  config = assets.tiny_config(
      teacher,
      data,
      arg,
      optim__num_steps=2,
      log__every_steps=1,
      eval__compare_teacher=False,
      **kw,
  )
  summary, rows, seen = _train(config, str(tmp_path / name), monkeypatch)
  run, before, batch = seen["run"], seen["before"], seen["batch"]
  got, (key_s, key_t), kw = _step_one(seen)
  if run.loss.uses_bank:
    bank_s, bank_t = before.bank["student"], before.bank["teacher"]
    if config.bank.shared_negatives:
      key_t = key_s
    kw.update(
        bank_s=np.asarray(bank_s.vectors),
        bank_t=np.asarray(bank_t.vectors),
        negs_s=_negatives(run, key_s, bank_t, batch),
        negs_t=_negatives(run, key_t, bank_s, batch),
    )
  want = obj_ref.objective(_setting(run, config), labels=batch["labels"], **kw)
  assert summary["steps"] == 2 and [r["step"] for r in rows] == [1, 2]
  _check(want, got, rows[0], name)
  assert {"kd", "pkd", "crd"} & set(want) == _TERMS[name]
  for row in rows:  # Every step logs exactly the variant's terms, finite.
    assert {"kd", "pkd", "crd"} & set(row) == _TERMS[name], row
    for key in ["loss", "task", *_TERMS[name]]:
      assert np.isfinite(row[key]), (key, row)


def test_mlm_terms_and_total_match_numpy(tmp_path, monkeypatch):
  """CoDIR-Pre: CE and KD over the masked tokens, in-batch InfoNCE."""
  teacher = assets.make_mlm_teacher_dir(str(tmp_path / "mlm"))
  train = assets.write_corpus(str(tmp_path / "train.txt"), num_lines=200)
  config = assets.pretrain_config(
      teacher, train, train, optim__num_steps=1, log__every_steps=1
  )
  config.pretrain.eval_files = ()
  summary, rows, seen = _train(config, str(tmp_path / "w"), monkeypatch)
  got, _, kw = _step_one(seen)
  batch = seen["batch"]
  l = config.loss
  st = obj_ref.Setting(
      beta=l.kd_weight,
      rho=l.kd_temperature,
      lam=l.crd_weight,
      mu=0.0,
      tau=l.temperature,
      pooling=l.pooling,
      student_layers=(1,),
      teacher_layers=(2,),
      negatives="in_batch",
      objective="info_nce",
      positive="current",
      regression=False,
      mlm=True,
      batch_scaled=False,
      num_data=0,
  )
  want = obj_ref.objective(
      st,
      labels=None,
      mlm_mask=batch["mlm_mask"],
      mlm_labels=batch["mlm_labels"],
      **kw,
  )
  assert set(want) == {"task", "kd", "crd", "loss"}
  assert summary["steps"] == 1 and [r["step"] for r in rows] == [1]
  _check(want, got, rows[0], "mlm")
