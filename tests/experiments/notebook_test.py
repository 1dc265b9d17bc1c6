"""Executes experiments/codir_colab.ipynb end to end in a fresh kernel.

Both data branches run every cell with a shorter mini ablation: a cell
inserted after the notebook's `parameters` cell (as papermill does) sets
fewer steps, and the kernel compiles with XLA's cheap CPU settings
(tests/experiments/processes.py). The real-GLUE branch reads the same
sentences as the generated task, so it runs the same programs (it loads
them from the session's compilation cache, which the kernel inherits) and
must reach the same numbers.

The generated-task run's mini ablation is also experiments/ablation.py's
end-to-end test (its table, JSON, plot, workdirs, resume and refusal), so
that the ablation's train steps are compiled once for both.
"""

import base64
import json
import math
import os
import re
import sys

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
import nbclient
import nbformat
import numpy as np
import pytest

from codir_jax.train import task_data
from tests.experiments import processes
from tests.train import assets
from experiments import ablation  # noqa: E402  (REPO is on sys.path)

NOTEBOOK = os.path.join(assets.REPO, "experiments", "codir_colab.ipynb")
CELL_TIMEOUT_S = 150
# The notebook's defaults are 300 teacher and 100 student steps; 120
# teacher steps predict both classes (the reload check has teeth) and the
# seeds' students differ.
PARAMETERS = {"TEACHER_STEPS": 120, "STUDENT_STEPS": 10}
NUM_TRAIN, NUM_DEV = 256, 128  # notebook_data's generated task.


def _kernel_manager(tmp_path) -> KernelManager:
  """A kernel on this interpreter, independent of installed kernel specs.

  A `python3` spec on the Jupyter path could point at another Python; this
  one runs `sys.executable` (the test's venv), so the test needs no
  `ipykernel install` step.
  """
  spec_dir = tmp_path / "kernels" / "codir-test"
  spec_dir.mkdir(parents=True)
  (spec_dir / "kernel.json").write_text(
      json.dumps(
          {
              "argv": [
                  sys.executable,
                  "-m",
                  "ipykernel_launcher",
                  "-f",
                  "{connection_file}",
              ],
              "display_name": "codir-test",
              "language": "python",
          }
      )
  )
  specs = KernelSpecManager(
      kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False
  )
  return KernelManager(kernel_name="codir-test", kernel_spec_manager=specs)


def _outputs(nb):
  return [
      o
      for cell in nb.cells
      if cell.cell_type == "code"
      for o in cell.get("outputs", [])
  ]


def _with_parameters(nb, values):
  """Inserts `NAME = value` lines after the cell tagged `parameters`."""
  tagged = [
      i
      for i, cell in enumerate(nb.cells)
      if "parameters" in cell.metadata.get("tags", [])
  ]
  assert len(tagged) == 1, tagged
  names = re.findall(r"^(\w+) =", nb.cells[tagged[0]].source, re.M)
  assert set(values) <= set(names), (values, names)
  source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
  nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(source))
  return nb


def _run_notebook(tmp_path, env, parameters):
  """Executes the notebook; returns (stream text, outputs, its temp dir)."""
  work = tmp_path / "tmp"  # The kernel's temp dirs land here.
  work.mkdir()
  # Every program goes to the session's compilation cache, the eager
  # cells' small ones too (JAX skips those under 1 s by default): the
  # second run loads them all.
  env = processes.env(
      TMPDIR=str(work), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env
  )
  nb = _with_parameters(nbformat.read(NOTEBOOK, as_version=4), parameters)
  client = nbclient.NotebookClient(
      nb,
      km=_kernel_manager(tmp_path),
      timeout=CELL_TIMEOUT_S,
      startup_timeout=60,
      resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
  )
  client.execute(env=env)  # Raises CellExecutionError on any failing cell.

  outputs = _outputs(nb)
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(
      o.get("text", "") for o in outputs if o.output_type == "stream"
  )
  return text, outputs, work


def _check_common(text, outputs, work):
  # The install cell found codir_jax and skipped pip.
  assert "pip install skipped" in text
  loss = re.search(r"info_nce loss \(mean over batch\): (\S+)", text)
  assert loss and math.isfinite(float(loss.group(1)))
  assert float(loss.group(1)) > 0
  assert "bank_info_nce == info_nce on gathered negatives: OK" in text
  step = re.search(r"train step 1: loss=(\S+) crd=(\S+)", text)
  assert step and all(math.isfinite(float(g)) for g in step.groups())
  for variant in ("kd", "codir"):
    assert re.search(
        rf"{variant}: accuracy [01]\.\d+ ± \d\.\d+ over 2 seeds", text
    )
  pngs = [
      o["data"]["image/png"]
      for o in outputs
      if o.output_type == "display_data" and "image/png" in o["data"]
  ]
  assert len(pngs) == 1
  assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
  # Everything it wrote stayed in its temp dir.
  results = list(work.glob("codir_colab_*/ablation/results.json"))
  assert len(results) == 1
  with open(results[0], encoding="utf-8") as f:
    results = json.load(f)
  s = results["settings"]
  assert (s["teacher_steps"], s["steps"], s["max_len"]) == (
      PARAMETERS["TEACHER_STEPS"],
      PARAMETERS["STUDENT_STEPS"],
      16,
  )
  return results


def _dev_scores(results):
  """(teacher, {variant: per-seed}) dev accuracies of a results.json."""
  task = results["tasks"]["sst2"]
  return task["teacher"]["dev"]["accuracy"], {
      name: [r["dev"]["accuracy"] for r in v["runs"]]
      for name, v in task["variants"].items()
  }


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  # Offline and deterministic: the generated task, whatever is installed.
  env = {"CODIR_NOTEBOOK_DATA": "toy", "CODIR_GLUE_HF_DIR": None}
  return _run_notebook(tmp_path_factory.mktemp("toy"), env, PARAMETERS)


@pytest.mark.slow
def test_notebook_executes_and_shows_loss_step_and_plot(toy_run):
  text, outputs, work = toy_run
  assert "data: the generated sentiment task" in text
  settings = _check_common(text, outputs, work)["settings"]
  assert (settings["source"], settings["subset"]) == ("tsv", 0)


def _ablation_argv(out, s, **changed):
  """ablation.py flags of the settings `s` stored in results.json."""
  flags = {
      "out": str(out),
      "jax_cache": "",  # As the notebook: the trainer's cache.
      **{
          k: s[k]
          for k in (
              *("tasks", "source", "data_dir", "teacher", "variants"),
              *("seeds", "subset", "eval_limit", "steps", "teacher_steps"),
              *("max_len", "lr", "teacher_lr"),
          )
      },
      **changed,
  }
  argv = []
  for k, v in flags.items():
    argv += [f"--{k}", *map(str, v if isinstance(v, list) else [v])]
  return argv


@pytest.mark.slow
def test_ablation_main_writes_table_json_plot_and_resumes(toy_run):
  """experiments/ablation.py end to end: the notebook's mini ablation."""
  _, _, work = toy_run
  (out,) = work.glob("codir_colab_*/ablation")
  with open(out / "results.json", encoding="utf-8") as f:
    stored = json.load(f)
  data = stored["settings"]["data_dir"]
  task = stored["tasks"]["sst2"]
  assert task["metrics"] == ["accuracy"]
  # The teacher's dev score is what transformers computes from its export.
  teacher_acc = task["teacher"]["dev"]["accuracy"]
  assert teacher_acc == pytest.approx(
      assets.hf_dev_accuracy(str(out / "sst2/teacher/teacher"), data),
      abs=1e-9,
  )
  # It beats the majority class, so it predicts both: the reload check
  # below has teeth.
  _, dev_labels = task_data.demo_sentences(NUM_DEV, 1)  # The dev.tsv.
  assert teacher_acc > max(dev_labels.mean(), 1 - dev_labels.mean())
  assert task["teacher"]["steps"] == PARAMETERS["TEACHER_STEPS"]
  assert list(task["variants"]) == ["kd", "codir"]
  for name, v in task["variants"].items():
    assert [r["seed"] for r in v["runs"]] == [0, 1]
    accs = [r["dev"]["accuracy"] for r in v["runs"]]
    # 128 dev examples: every accuracy is a whole number of them.
    assert all(abs(a * NUM_DEV - round(a * NUM_DEV)) < 1e-9 for a in accs)
    assert v["n"] == 2
    np.testing.assert_allclose(v["mean"]["accuracy"], np.mean(accs))
    np.testing.assert_allclose(v["std"]["accuracy"], np.std(accs, ddof=1))
    for r in v["runs"]:
      assert r["steps"] == PARAMETERS["STUDENT_STEPS"] and r["wall_s"] > 0
      assert not r["resumed"] and r["teacher_dev"] == task["teacher"]["dev"]
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
  assert f"| teacher (fine-tuned) | 1 | {teacher_acc:.4f} |" in md
  for name, v in task["variants"].items():
    cell = f"{v['mean']['accuracy']:.4f} ± {v['std']['accuracy']:.4f}"
    assert f"| {name} | 2 | {cell} |" in md
  # The plot is a readable PNG image.
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  height, width, _ = plt.imread(str(out / "results.png")).shape
  assert height > 200 and width > 200

  # A second call reads every summary back, reproduces the numbers and
  # writes what it returns.
  again = ablation.main(_ablation_argv(out, stored["settings"]))
  with open(out / "results.json", encoding="utf-8") as f:
    assert json.load(f) == json.loads(json.dumps(again, default=float))
  for name, v in again["tasks"]["sst2"]["variants"].items():
    assert all(r["resumed"] for r in v["runs"])
    assert v["mean"] == task["variants"][name]["mean"]
  # Other settings in the same --out are refused, not mixed in.
  with pytest.raises(ValueError, match="another config"):
    ablation.main(_ablation_argv(out, stored["settings"], lr=3e-3))


@pytest.mark.slow
def test_notebook_real_glue_branch_on_a_local_hf_dataset(tmp_path, toy_run):
  """The real-data branch: SST-2 via source='hf' from a saved dataset.

  The dataset holds the generated task's sentences, so the tokenizer, the
  shapes and the data are the toy run's: the same dev accuracies.
  """
  datasets = pytest.importorskip("datasets")

  features = datasets.Features(
      {
          "sentence": datasets.Value("string"),
          "label": datasets.ClassLabel(names=["negative", "positive"]),
          "idx": datasets.Value("int32"),
      }
  )
  splits = {}
  for name, n, seed in (("train", NUM_TRAIN, 0), ("validation", NUM_DEV, 1)):
    texts, labels = task_data.demo_sentences(n, seed)
    splits[name] = datasets.Dataset.from_dict(
        {"sentence": texts, "label": labels.tolist(), "idx": list(range(n))},
        features=features,
    )
  hf_dir = tmp_path / "hf_glue"
  datasets.DatasetDict(splits).save_to_disk(str(hf_dir / "sst2"))
  env = {"CODIR_GLUE_HF_DIR": str(hf_dir), "CODIR_NOTEBOOK_DATA": None}
  # SST-2 would get 32 tokens; 16 fit these sentences and match the toy run.
  text, outputs, work = _run_notebook(
      tmp_path, env, {**PARAMETERS, "MAX_LEN": 16}
  )
  assert re.search(
      r"data: GLUE SST-2 via source='hf' \(local dataset .*hf_glue\);"
      rf" first {NUM_TRAIN} of {NUM_TRAIN} train, {NUM_DEV} of {NUM_DEV} dev",
      text,
  )
  results = _check_common(text, outputs, work)
  settings = results["settings"]
  assert (settings["source"], settings["data_dir"]) == ("hf", str(hf_dir))
  assert (settings["subset"], settings["eval_limit"]) == (NUM_TRAIN, NUM_DEV)
  assert _dev_scores(results) == _dev_scores(_check_common(*toy_run))
