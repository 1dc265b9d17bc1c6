"""Executes experiments/codir_colab.ipynb end to end in a fresh kernel."""

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
import pytest

from tests.train import assets

NOTEBOOK = os.path.join(assets.REPO, "experiments", "codir_colab.ipynb")
CELL_TIMEOUT_S = 150


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


def _run_notebook(tmp_path, monkeypatch):
  """Executes the notebook; returns (stream text, outputs, its temp dir)."""
  # The kernel inherits the environment: its temp dirs land in tmp_path.
  work = tmp_path / "tmp"
  work.mkdir()
  monkeypatch.setenv("TMPDIR", str(work))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb,
      km=_kernel_manager(tmp_path),
      timeout=CELL_TIMEOUT_S,
      startup_timeout=60,
      resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
  )
  client.execute()  # Raises CellExecutionError on any failing cell.

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
    return json.load(f)


@pytest.mark.slow
def test_notebook_executes_and_shows_loss_step_and_plot(tmp_path, monkeypatch):
  # Offline and deterministic: the generated task, whatever is installed.
  monkeypatch.setenv("CODIR_NOTEBOOK_DATA", "toy")
  monkeypatch.delenv("CODIR_GLUE_HF_DIR", raising=False)
  text, outputs, work = _run_notebook(tmp_path, monkeypatch)
  assert "data: the generated sentiment task" in text
  results = _check_common(text, outputs, work)
  assert results["settings"]["source"] == "tsv"


@pytest.mark.slow
def test_notebook_real_glue_branch_on_a_local_hf_dataset(tmp_path, monkeypatch):
  """The real-data branch: SST-2 via source='hf' from a saved dataset."""
  datasets = pytest.importorskip("datasets")
  from codir_jax.train import task_data  # pylint: disable=g-import-not-at-top

  features = datasets.Features(
      {
          "sentence": datasets.Value("string"),
          "label": datasets.ClassLabel(names=["negative", "positive"]),
          "idx": datasets.Value("int32"),
      }
  )
  splits = {}
  for name, n, seed in (("train", 320, 0), ("validation", 96, 1)):
    texts, labels = task_data.demo_sentences(n, seed)
    splits[name] = datasets.Dataset.from_dict(
        {"sentence": texts, "label": labels.tolist(), "idx": list(range(n))},
        features=features,
    )
  hf_dir = tmp_path / "hf_glue"
  datasets.DatasetDict(splits).save_to_disk(str(hf_dir / "sst2"))
  monkeypatch.setenv("CODIR_GLUE_HF_DIR", str(hf_dir))
  monkeypatch.delenv("CODIR_NOTEBOOK_DATA", raising=False)
  text, outputs, work = _run_notebook(tmp_path, monkeypatch)
  assert re.search(
      r"data: GLUE SST-2 via source='hf' \(local dataset .*hf_glue\);"
      r" first 320 of 320 train, 96 of 96 dev",
      text,
  )
  results = _check_common(text, outputs, work)
  settings = results["settings"]
  assert (settings["source"], settings["data_dir"]) == ("hf", str(hf_dir))
  assert (settings["subset"], settings["eval_limit"]) == (320, 96)
