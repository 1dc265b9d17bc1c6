"""End-to-end runs of the trainer on the tiny teacher and task."""

import dataclasses
import functools
import json
import os
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy

from codir_jax.train import loop
from codir_jax.train import step as step_lib
from codir_jax.train import trainer
from tests.train import assets


def _run(tmp_path, tiny_dirs, name="run", arg=None, **kw):
  teacher, data = tiny_dirs
  config = assets.tiny_config(teacher, data, arg, **kw)
  workdir = str(tmp_path / name)
  return trainer.train_and_evaluate(config, workdir), workdir


def _rows(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.fixture(scope="module")
def trained(tiny_dirs, tmp_path_factory):
  """One default tiny run (CoDIR, 6 steps, dev evaluation every 2 steps).

  Returns (summary, workdir, how many times the train step was traced).
  Tests only read the workdir (copy it to change it). The variants' runs
  are objective_test's (each checked against NumPy there).
  """
  traces = []
  original = step_lib.train_step

  @functools.wraps(original)  # The same program (name) as a plain run.
  def counting(*args, **kwargs):
    traces.append(1)
    return original(*args, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(step_lib, "train_step", counting)
    summary, workdir = _run(
        tmp_path_factory.mktemp("trained"),
        tiny_dirs,
        log__eval_every_steps=2,
    )
  return summary, workdir, len(traces)


def test_codir_logs_its_terms_and_reports_dev_and_speed(trained, tiny_dirs):
  summary, workdir, _ = trained
  rows = _rows(workdir)
  assert [r["step"] for r in rows] == [2, 4, 6]
  for row in rows:
    assert {"kd", "pkd", "crd"} & set(row) == {"kd", "crd"}, row
    for key in ["loss", "task", "kd", "crd"]:
      assert np.isfinite(row[key]), (key, row)
  # The dev score equals what transformers computes from the export, and
  # the reported speed ratio is the ratio of the two reported speeds.
  assert summary["dev"]["accuracy"] == pytest.approx(
      assets.hf_dev_accuracy(summary["export"], tiny_dirs[1]), abs=1e-9
  )
  speed = summary["speed"]
  assert speed["student_vs_teacher"] == pytest.approx(
      speed["student_examples_per_s"] / speed["teacher_examples_per_s"]
  )


def test_export_loads_in_transformers(trained):
  transformers = pytest.importorskip("transformers")
  torch = pytest.importorskip("torch")
  summary, workdir, _ = trained
  export = summary["export"]
  assert export == os.path.join(workdir, "student")
  model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      export, output_loading_info=True
  )
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert model.config.num_hidden_layers == 1
  tok = transformers.AutoTokenizer.from_pretrained(export)
  enc = tok(
      ["the film is good", "the plot is not good"],
      return_tensors="pt",
      padding=True,
  )
  with torch.no_grad():
    logits = model(**enc).logits
  assert logits.shape == (2, 2) and torch.isfinite(logits).all()
  assert os.path.isdir(os.path.join(workdir, "best"))
  assert json.load(open(os.path.join(workdir, "summary.json")))["steps"] == 6


def test_step_compiles_once(trained):
  summary, _, traces = trained  # Evaluations every 2 steps in between.
  assert summary["steps"] == 6
  assert traces == 1, f"train_step traced {traces} times"


def test_evaluate_mode_matches_training_summary(trained, tmp_path, tiny_dirs):
  summary, _, _ = trained
  teacher, data = tiny_dirs
  config = assets.tiny_config(teacher, data, mode="evaluate")
  config.eval.model_path = summary["export"]
  again = trainer.train_and_evaluate(config, str(tmp_path / "eval"))
  assert again["dev"] == pytest.approx(summary["dev"], abs=1e-9)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, tiny_dirs, monkeypatch
):
  compile_run = loop.compile_run

  def poisoned(run):
    """The real step (the default run's program); step 5 logs a NaN loss."""
    compiled = compile_run(run)
    jitted = compiled.train_step

    def train_step(state, batch, teacher_params):
      step = int(jax.device_get(state.step))  # Before the step donates it.
      new, metrics = jitted(state, batch, teacher_params)
      if step >= 4:
        metrics = dict(metrics, loss=(np.float32(np.nan), metrics["loss"][1]))
      return new, metrics

    return dataclasses.replace(compiled, train_step=train_step)

  monkeypatch.setattr(loop, "compile_run", poisoned)
  # Step 5's loss is NaN: checkpoint 4 (its input) would replay it.
  with pytest.raises(
      FloatingPointError, match="last finite checkpoint is step 2"
  ):
    _run(tmp_path, tiny_dirs, name="nan")
  ckpts = sorted(os.listdir(tmp_path / "nan" / "checkpoints"))
  assert ckpts == ["2"], ckpts
  aside = sorted(os.listdir(tmp_path / "nan" / "nonfinite"))
  assert aside == ["5.json", "checkpoint_4"], aside


def test_missing_teacher_path_is_named(tmp_path, tiny_dirs):
  with pytest.raises(FileNotFoundError, match="config.teacher.path.*nowhere"):
    _run(tmp_path, tiny_dirs, name="w", teacher__path=str(tmp_path / "nowhere"))
  assert not (tmp_path / "w").exists()


def test_unknown_config_key_fails_before_touching_the_workdir(tmp_path):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports

  workdir = tmp_path / "w"
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "codir_jax.main",
          "--config",
          os.path.join(assets.REPO, "configs", "tiny.py"),
          "--config.loss.temprature=1.0",
          f"--workdir={workdir}",
      ],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=assets.REPO,
  )
  assert proc.returncode != 0
  assert "temprature" in proc.stderr
  assert not workdir.exists()


def test_teacher_without_task_head_is_refused_for_kd(tmp_path, tiny_dirs):
  teacher, _ = tiny_dirs
  cfg = json.load(open(os.path.join(teacher, "config.json")))
  headless = tmp_path / "headless"
  headless.mkdir()
  for f in os.listdir(teacher):
    data = open(os.path.join(teacher, f), "rb").read()
    (headless / f).write_bytes(data)
  cfg["architectures"] = ["BertModel"]
  (headless / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="finetune_teacher"):
    _run(tmp_path, tiny_dirs, teacher__path=str(headless))


def test_corrupt_checkpoint_is_a_clear_error_and_nothing_changes(
    trained, tmp_path, tiny_dirs
):
  workdir = str(tmp_path / "c")
  shutil.copytree(trained[1], workdir)
  state_dir = os.path.join(workdir, "checkpoints", "6", "state")
  victims = [
      os.path.join(r, f)
      for r, _, fs in os.walk(state_dir)
      for f in fs
      if "manifest" in f or f.endswith(".ocdbt") or "d" == r[-1:]
  ]
  assert victims
  for v in victims:
    with open(v, "wb") as f:
      f.write(b"garbage")

  def snapshot():
    out = {}
    for r, _, fs in os.walk(workdir):
      for f in fs:
        p = os.path.join(r, f)
        out[p] = open(p, "rb").read()
    return out

  before = snapshot()
  os.remove(os.path.join(workdir, "summary.json"))  # As if killed.
  with pytest.raises(
      Exception, match="checkpoints/6 exists but could not be restored"
  ) as err:
    _run(tmp_path, tiny_dirs, name="c", log__eval_every_steps=2)
  # One short paragraph; the library's detail stays chained.
  message = str(err.value)
  assert len(message) < 700 and "\n" not in message, message
  assert f"Delete {os.path.dirname(state_dir)}" in message, message
  assert err.value.__cause__ is not None
  del before[os.path.join(workdir, "summary.json")]
  assert snapshot() == before


def test_exported_weights_differ_from_teacher_layers(trained, tiny_dirs):
  """Training changed the student (guards against exporting the init)."""
  teacher, _ = tiny_dirs
  summary, _, _ = trained
  t = safetensors.numpy.load_file(os.path.join(teacher, "model.safetensors"))
  s = safetensors.numpy.load_file(
      os.path.join(summary["export"], "model.safetensors")
  )
  key = "bert.encoder.layer.0.attention.self.query.weight"
  t_key = "bert.encoder.layer.1.attention.self.query.weight"
  assert s[key].shape == t[t_key].shape
  assert not np.allclose(s[key], t[t_key])


def test_predict_writes_a_glue_submission_file(tmp_path, tiny_dirs):
  teacher, data = tiny_dirs
  glue = tmp_path / "glue"
  (glue / "SST-2").mkdir(parents=True)
  texts = ["the film is good ", "the plot is not good ", "its cast is dull "]
  (glue / "SST-2" / "test.tsv").write_text(
      "index\tsentence\n" + "".join(f"{i}\t{t}\n" for i, t in enumerate(texts))
  )
  config = assets.tiny_config(teacher, str(glue), mode="predict")
  config.eval.model_path = teacher
  summary = trainer.train_and_evaluate(config, str(tmp_path / "p"))
  [path] = summary["prediction_files"]
  assert os.path.basename(path) == "SST-2.tsv"
  lines = open(path).read().splitlines()
  assert lines[0] == "index\tprediction"
  assert [l.split("\t")[0] for l in lines[1:]] == ["0", "1", "2"]
  assert {l.split("\t")[1] for l in lines[1:]} <= {"0", "1"}
  # The predictions are the model's own argmax on those sentences.
  from codir_jax import models  # pylint: disable=g-import-not-at-top

  model = models.from_pretrained(teacher, head="classification")
  tok = models.load_tokenizer(teacher)
  enc = tok(texts, padding=True, return_tensors="np")
  logits, _ = model(
      enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids")
  )
  expected = [str(int(i)) for i in np.argmax(np.asarray(logits), -1)]
  assert [l.split("\t")[1] for l in lines[1:]] == expected


def test_early_stopping_ends_the_run_and_keeps_the_best(tmp_path, tiny_dirs):
  # lr 1e-12: the dev score cannot change, so the second evaluation is no
  # better than the first and patience 1 ends the run at step 2 of 6. KD:
  # the smallest step program (early stopping ignores the variant).
  summary, workdir = _run(
      tmp_path,
      tiny_dirs,
      name="early",
      arg="variant=kd",
      optim__lr=1e-12,
      log__eval_every_steps=1,
      log__eval_patience=1,
  )
  assert summary["steps"] == 2
  assert summary["best_dev"]["step"] == 1
  evals = _rows(workdir, "eval")
  assert [r["step"] for r in evals] == [1, 2]  # No duplicate final row.
  assert os.path.isdir(os.path.join(workdir, "best"))
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2"]
  # The KD variant's rows hold task and KD only (objective_test checks the
  # other variants' rows and terms against NumPy).
  [row] = _rows(workdir)
  assert {"kd", "pkd", "crd"} & set(row) == {"kd"}, row
  assert all(np.isfinite(row[k]) for k in ("loss", "task", "kd")), row


def test_patience_without_periodic_evaluation_is_refused(tmp_path, tiny_dirs):
  with pytest.raises(ValueError, match="config.log.eval_patience"):
    _run(tmp_path, tiny_dirs, name="w", log__eval_patience=2)
  assert not (tmp_path / "w").exists()
