"""experiments/ablation.py: flags, schedules and the teacher reload check.

Its end-to-end test (table, JSON, plot, workdirs, resume, refusal) checks
the Colab notebook's mini ablation, in notebook_test.py: the notebook runs
the same `ablation.main`, and sharing its run compiles the ablation's train
steps once.
"""

import os

import pytest

from tests.train import assets  # noqa: F401  (puts the repo on sys.path)
from experiments import ablation  # noqa: E402
from experiments import runs  # noqa: E402


def test_settings_subset_defaults_and_full():
  subset, args = ablation.parse_args(["--out", "o"])
  assert subset.tasks == ("sst2", "mrpc")
  assert subset.variants == ("kd", "pkd", "codir", "codir_inbatch")
  assert subset.seeds == (0, 1, 2) and subset.schedule == "subset"
  assert subset.subset > 0 and subset.steps > 0 and subset.max_len == 64
  assert args.jax_cache == os.path.join("o", "jax_cache")
  full, _ = ablation.parse_args(["--out", "o", "--full"])
  assert (full.subset, full.steps, full.max_len) == (0, 0, 128)
  c = ablation.student_config(full, "mrpc", "pkd", 2, "/t")
  assert (c.optim.num_steps, c.optim.num_epochs) == (0, 10.0)
  assert (c.optim.lr, c.optim.batch_size) == (1e-5, 16)  # Released code.
  assert c.loss.pkd_weight > 0 and c.loss.crd_weight == 0 and c.seed == 2
  t = ablation.teacher_config(full, "sst2")
  assert t.mode == "finetune_teacher" and t.teacher.path == ""
  # --steps sets both schedules unless --teacher_steps is given.
  s, _ = ablation.parse_args(["--out", "o", "--steps", "5"])
  assert (s.steps, s.teacher_steps) == (5, 5)
  with pytest.raises(ValueError, match="Unknown GLUE task"):
    ablation.parse_args(["--out", "o", "--tasks", "sst3"])


def test_teacher_reload_check_refuses_a_changed_teacher():
  dev = {"accuracy": 0.8, "f1": 0.85, "score": 0.825}
  runs.check_teacher_reload(dev, {"teacher_dev": dict(dev)}, "w")
  runs.check_teacher_reload(dev, {}, "w")  # Modes without the report.
  with pytest.raises(RuntimeError, match="does not round-trip"):
    runs.check_teacher_reload(
        dev, {"teacher_dev": {**dev, "accuracy": 0.79}}, "w"
    )
  with pytest.raises(RuntimeError, match="f1"):
    runs.check_teacher_reload(dev, {"teacher_dev": {"accuracy": 0.8}}, "w")
