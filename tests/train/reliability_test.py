"""Issue 14: the NaN tripwire, fixed recipes, checked values, one row a step."""

import collections
import json
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from codir_jax.train import recipe
from codir_jax.train import trainer
from tests.train import assets


def _run(tiny_dirs, workdir, arg=None, **kw):
  teacher, data = tiny_dirs
  config = assets.tiny_config(teacher, data, arg, **kw)
  return trainer.train_and_evaluate(config, str(workdir))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def _bytes(workdir, names=("config.json", "summary.json", "metrics.jsonl")):
  out = {}
  for n in names:
    p = os.path.join(workdir, n)
    out[n] = open(p, "rb").read() if os.path.exists(p) else None
  return out


def _checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(s) for s in os.listdir(d) if s.isdigit())


# Every run here that trains: the KD variant (the smallest step program, no
# bank or projection; nothing here depends on the variant), 4 steps (the
# warm-up's lr = 0 at step 1, the full lr at step 2), each checkpointed. At
# lr 1e-3 (tiny.py's) they are one program, compiled once for the file;
# only the huge-lr runs compile their own.
_KD = "variant=kd"
_KW = dict(
    optim__num_steps=4,
    ckpt__every_steps=1,
    ckpt__keep=20,
    eval__compare_teacher=False,
)


@pytest.fixture(scope="module")
def finished(tiny_dirs, tmp_path_factory):
  """(workdir, summary) of one finished run; tests change only copies."""
  workdir = tmp_path_factory.mktemp("finished") / "run"
  return workdir, _run(tiny_dirs, workdir, _KD, log__every_steps=3, **_KW)


def _copy(finished, tmp_path):
  workdir = tmp_path / "copy"
  shutil.copytree(finished[0], workdir)
  return workdir


@pytest.mark.parametrize(
    "lr, what", [(1e37, "non-finite"), (1e9, "diverged (update norm")]
)
def test_huge_lr_leaves_only_finite_checkpoints_and_resumes(
    tiny_dirs, tmp_path, capsys, lr, what
):
  workdir = tmp_path / "nan"
  # Every step is checkpointed. The first real update (step 2, after the
  # warm-up's lr = 0 at step 1) sends the parameters to ~lr: at 1e37 finite
  # element by element but with an overflowing norm (loss- and gradient-
  # only checks saved them); at 1e9 finite in every way but ruined (the
  # issue's probe: the next forward is NaN whatever the lr of a rerun), so
  # only the update/parameter norm ratio can tell.
  with pytest.raises(FloatingPointError) as err:
    _run(tiny_dirs, workdir, _KD, optim__lr=lr, **_KW)
  message = str(err.value)
  assert message.startswith(what) and "at step 2:" in message, message
  named = int(re.search(r"last finite checkpoint is step (\d+)", message)[1])
  steps = _checkpoint_steps(workdir)
  assert steps == [1] and named == 1, (steps, message)
  checkpointer = ocp.StandardCheckpointer()
  for s in steps:
    state = checkpointer.restore(workdir / "checkpoints" / str(s) / "state")
    leaves = [
        np.asarray(x, np.float32) for x in jax.tree.leaves(state["params"])
    ]
    assert all(np.all(np.isfinite(x)) for x in leaves), s
    # And the float32 norm, as the step computes it, does not overflow.
    assert np.isfinite(np.sum([np.sum(np.square(x)) for x in leaves])), s
  # Same workdir, sane lr (allowed after the tripwire): resumes and ends.
  capsys.readouterr()
  summary = _run(tiny_dirs, workdir, _KD, optim__lr=1e-3, **_KW)
  assert f"Resumed from step {named}" in capsys.readouterr().out
  assert summary["steps"] == 4
  rows = _rows(workdir)
  train = [r["step"] for r in rows if r["split"] == "train"]
  assert train == [1, 2, 3, 4], train  # One row a step, no repeats.
  assert all(r["finite"] == 1.0 for r in rows if r["split"] == "train")


def test_changed_recipe_is_refused_and_nothing_is_rewritten(
    tiny_dirs, finished, tmp_path, capsys
):
  workdir = _copy(finished, tmp_path)
  first = finished[1]
  before = _bytes(workdir)
  with pytest.raises(ValueError) as err:
    _run(tiny_dirs, workdir, _KD, optim__lr=0.5, loss__temperature=0.5, **_KW)
  message = str(err.value)
  assert "optim.lr: 0.001 -> 0.5" in message, message
  assert "loss.temperature: " in message and "-> 0.5" in message, message
  assert "2 field(s) differ" in message, message
  assert _bytes(workdir) == before
  # The same recipe (log cadence may change): the stored summary, as is.
  capsys.readouterr()
  again = _run(tiny_dirs, workdir, _KD, log__every_steps=1, **_KW)
  assert "already holds this finished run" in capsys.readouterr().out
  assert again == json.loads(before["summary.json"])
  assert first["steps"] == again["steps"] == 4
  assert _bytes(workdir) == before


def test_recipe_keys_added_later_count_at_their_default():
  stored = {"loss": {"temperature": 0.1}, "log": {"every_steps": 5}}
  new = {
      "loss": {"temperature": 0.1, "new_term": 0.0},
      "log": {"every_steps": 1},
  }
  defaults = {"loss": {"new_term": 0.0}}
  assert recipe.differences(stored, new, defaults=defaults) == []
  new["loss"]["new_term"] = 1.0
  assert recipe.differences(stored, new, defaults=defaults) == [
      ("loss.new_term", "<absent>", 1.0)
  ]


def test_every_bad_value_is_named_before_the_workdir_is_touched(
    tiny_dirs, tmp_path
):
  workdir = tmp_path / "bad"
  bad = dict(
      loss__temperature=0.0,
      loss__kd_temperature=-1.0,
      loss__kd_weight=1.5,
      loss__crd_weight=-0.1,
      optim__batch_size=-8,
      optim__lr=0.0,
      task__eval_batch_size=0,
      bank__num_negatives=0,
      task__max_len=4,
  )
  with pytest.raises(ValueError) as err:
    _run(tiny_dirs, workdir, **bad)
  message = str(err.value)
  for key in bad:
    assert f"config.{key.replace('__', '.')} = " in message, (key, message)
  assert f"{len(bad)} invalid config value(s)" in message
  assert not workdir.exists()


def test_tokenizer_larger_than_the_embedding_is_refused(tiny_dirs, tmp_path):
  teacher, _ = tiny_dirs
  other = tmp_path / "other_tokenizer"
  shutil.copytree(teacher, other)
  tok = assets.make_tokenizer()
  tok.add_tokens([f"extra{i}" for i in range(40)])
  tok.save_pretrained(str(other))
  workdir = tmp_path / "vocab"
  with pytest.raises(ValueError, match="embedding vocabulary") as err:
    _run(tiny_dirs, workdir, teacher__path=str(other))
  assert "config.teacher.path" in str(err.value)
  assert "tokenizer's" in str(err.value)
  assert not (workdir / "checkpoints").exists()
  with pytest.raises(ValueError, match=r"config.student.layers = \[5\]"):
    _run(tiny_dirs, workdir, student__layers=(5,))
  assert not (workdir / "checkpoints").exists()


def test_saves_log_their_window_and_resume_drops_later_rows(
    tiny_dirs, finished, tmp_path
):
  workdir = _copy(finished, tmp_path)  # Logged every 3 steps, saved each.
  train = [r["step"] for r in _rows(workdir) if r["split"] == "train"]
  assert train == [1, 2, 3, 4], train
  # As if killed after step 4's rows but before its checkpoint and summary.
  shutil.rmtree(workdir / "checkpoints" / "4")
  os.remove(workdir / "summary.json")
  _run(tiny_dirs, workdir, _KD, log__every_steps=3, **_KW)
  counts = collections.Counter((r["step"], r["split"]) for r in _rows(workdir))
  assert set(counts.values()) == {1}, counts
  assert (4, "eval") in counts and (4, "train") in counts
