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
  (spec_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
               "{connection_file}"],
      "display_name": "codir-test", "language": "python",
  }))
  specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")],
                            ensure_native_kernel=False)
  return KernelManager(kernel_name="codir-test", kernel_spec_manager=specs)


def _outputs(nb):
  return [o for cell in nb.cells if cell.cell_type == "code"
          for o in cell.get("outputs", [])]


@pytest.mark.slow
def test_notebook_executes_and_shows_loss_step_and_plot(tmp_path,
                                                        monkeypatch):
  # The kernel inherits the environment: its temp dirs land in tmp_path.
  work = tmp_path / "tmp"
  work.mkdir()
  monkeypatch.setenv("TMPDIR", str(work))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S,
      startup_timeout=60,
      resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
  )
  client.execute()  # Raises CellExecutionError on any failing cell.

  outputs = _outputs(nb)
  assert not [o for o in outputs if o.output_type == "error"]
  text = "".join(o.get("text", "") for o in outputs
                 if o.output_type == "stream")
  # The install cell found codir_jax and skipped pip.
  assert "pip install skipped" in text
  loss = re.search(r"info_nce loss \(mean over batch\): (\S+)", text)
  assert loss and math.isfinite(float(loss.group(1)))
  assert float(loss.group(1)) > 0
  assert "bank_info_nce == info_nce on gathered negatives: OK" in text
  step = re.search(r"train step 1: loss=(\S+) crd=(\S+)", text)
  assert step and all(math.isfinite(float(g)) for g in step.groups())
  for variant in ("kd", "codir"):
    assert re.search(rf"{variant}: accuracy [01]\.\d+ ± \d\.\d+ over 2 seeds",
                     text)
  pngs = [o["data"]["image/png"] for o in outputs
          if o.output_type == "display_data" and "image/png" in o["data"]]
  assert len(pngs) == 1
  assert base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
  # Everything it wrote stayed in its temp dir.
  assert (list(work.glob("codir_colab_*/ablation/results.md")))
