"""Session-wide tiny teacher and task (built once, read-only for tests)."""

import pytest

from tests.train import assets


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("tiny")
  teacher = assets.make_teacher_dir(str(root / "teacher"))
  data = assets.make_glue_dir(str(root / "glue"))
  return teacher, data
