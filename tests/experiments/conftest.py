"""A tiny teacher and GLUE-layout task for the experiments tests."""

import pytest

from tests.train import assets


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory):
  """(teacher dir, GLUE root): random 2-layer BERT, 64/32 demo sentences."""
  root = tmp_path_factory.mktemp("tiny_experiments")
  teacher = assets.make_teacher_dir(str(root / "teacher"))
  data = assets.make_glue_dir(str(root / "glue"), num_train=64, num_dev=32)
  return teacher, data
