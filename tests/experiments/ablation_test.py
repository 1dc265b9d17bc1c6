"""experiments/ablation.py end to end on the tiny offline teacher and task."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from tests.train import assets
from experiments import runs  # noqa: E402  (REPO is on sys.path via assets)

_PATH = os.path.join(assets.REPO, "experiments", "ablation.py")


def _load_ablation():
  """experiments/ is not a package: load the script by path."""
  spec = importlib.util.spec_from_file_location("codir_ablation", _PATH)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look the module up.
  spec.loader.exec_module(module)
  return module


ablation = _load_ablation()


def _argv(out, teacher, data, *extra):
  return [
      "--out",
      str(out),
      "--tasks",
      "SST-2",
      "--data_dir",
      data,
      "--teacher",
      teacher,
      "--variants",
      "kd",
      "codir",
      "--seeds",
      "0",
      "1",
      # A teacher trained enough to predict both classes, so that the
      # reload check (teacher_dev of every student run) has teeth.
      "--steps",
      "2",
      "--teacher_steps",
      "60",
      "--max_len",
      "16",
      "--lr",
      "1e-3",
      "--teacher_lr",
      "3e-3",
      *extra,
  ]


@pytest.mark.slow
def test_main_runs_table_json_plot_and_resumes(tmp_path, tiny_glue):
  teacher, data = tiny_glue
  out = tmp_path / "abl"
  results = ablation.main(_argv(out, teacher, data))

  # JSON: what main returned, per-seed runs and their mean / std.
  with open(out / "results.json", encoding="utf-8") as f:
    stored = json.load(f)
  assert stored == json.loads(json.dumps(results, default=float))
  assert stored["settings"]["steps"] == 2
  assert stored["settings"]["teacher_steps"] == 60
  task = stored["tasks"]["sst2"]
  assert task["metrics"] == ["accuracy"]
  # The teacher's dev score is what transformers computes from its export.
  assert task["teacher"]["dev"]["accuracy"] == pytest.approx(
      assets.hf_dev_accuracy(
          os.path.join(str(out), "sst2", "teacher", "teacher"), data
      ),
      abs=1e-9,
  )
  assert task["teacher"]["steps"] == 60
  assert list(task["variants"]) == ["kd", "codir"]
  for name, v in task["variants"].items():
    assert [r["seed"] for r in v["runs"]] == [0, 1]
    accs = [r["dev"]["accuracy"] for r in v["runs"]]
    # 32 dev examples: every accuracy is a whole number of them.
    assert all(abs(a * 32 - round(a * 32)) < 1e-9 for a in accs), accs
    assert v["n"] == 2
    np.testing.assert_allclose(v["mean"]["accuracy"], np.mean(accs))
    np.testing.assert_allclose(v["std"]["accuracy"], np.std(accs, ddof=1))
    assert all(r["steps"] == 2 and r["wall_s"] > 0 for r in v["runs"])
    assert not any(r["resumed"] for r in v["runs"])
    for r in v["runs"]:
      assert r["teacher_dev"] == task["teacher"]["dev"]
      # Each run has its own workdir; the record is its summary.json.
      assert r["workdir"] == str(out / "sst2" / name / f"seed{r['seed']}")
      with open(os.path.join(r["workdir"], "summary.json")) as f:
        assert json.load(f)["dev"] == r["dev"]
      with open(os.path.join(r["workdir"], "config.json")) as f:
        config = json.load(f)
      assert config["seed"] == r["seed"]
      assert config["loss"]["crd_weight"] == (0.1 if name == "codir" else 0)
      assert config["teacher"]["path"] == str(out / "sst2/teacher/teacher")
      assert not os.path.exists(os.path.join(r["workdir"], "checkpoints"))

  # Markdown: one row per model with mean ± std (4 decimals).
  md = (out / "results.md").read_text(encoding="utf-8")
  assert "## SST-2" in md and "| model | seeds | accuracy |" in md
  teacher_acc = task["teacher"]["dev"]["accuracy"]
  assert f"| teacher (fine-tuned) | 1 | {teacher_acc:.4f} |" in md
  for name, v in task["variants"].items():
    cell = f"{v['mean']['accuracy']:.4f} ± {v['std']['accuracy']:.4f}"
    assert f"| {name} | 2 | {cell} |" in md

  # The plot is a readable PNG image.
  png = out / "results.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  height, width, _ = plt.imread(str(png)).shape
  assert height > 200 and width > 200

  # A second call reads every summary back and reproduces the numbers.
  again = ablation.main(_argv(out, teacher, data))
  runs = again["tasks"]["sst2"]["variants"]["codir"]["runs"]
  assert all(r["resumed"] for r in runs)
  assert again["tasks"]["sst2"]["variants"]["codir"]["mean"] == (
      task["variants"]["codir"]["mean"]
  )

  # Other settings in the same --out are refused, not mixed in.
  with pytest.raises(ValueError, match="another config"):
    ablation.main(_argv(out, teacher, data, "--lr", "2e-3"))


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
