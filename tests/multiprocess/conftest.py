"""Assets of the multi-process tests: a tiny teacher, task and corpus."""

import os

import pytest

from tests.train import assets


def _write_test_split(glue: str, num: int) -> None:
  """SST-2/test.tsv (index, sentence) from the dev sentences."""
  with open(os.path.join(glue, "SST-2", "dev.tsv"), encoding="utf-8") as f:
    dev = [l.rstrip("\n").split("\t")[0] for l in f][1 : num + 1]
  with open(os.path.join(glue, "SST-2", "test.tsv"), "w") as f:
    f.write("index\tsentence\n")
    f.writelines(f"{i}\t{s}\n" for i, s in enumerate(dev))


@pytest.fixture(scope="session")
def mp_dirs(tmp_path_factory):
  """Teacher and GLUE root (40 train; 13 dev and 11 test, not multiples of
  the global eval batch 8)."""
  root = tmp_path_factory.mktemp("assets")
  glue = assets.make_glue_dir(str(root / "glue"), num_train=40, num_dev=13)
  _write_test_split(glue, 11)
  return {
      "teacher": assets.make_teacher_dir(str(root / "teacher"), head_std=1.0),
      "glue": glue,
  }


@pytest.fixture(scope="session")
def mlm_dirs(tmp_path_factory):
  """MLM teacher, corpus and held-out text (CoDIR-Pre)."""
  root = tmp_path_factory.mktemp("mlm_assets")
  return {
      "mlm": assets.make_mlm_teacher_dir(str(root / "mlm")),
      "corpus": assets.write_corpus(str(root / "corpus.txt"), num_lines=300),
      "heldout": assets.write_corpus(
          str(root / "heldout.txt"), num_lines=40, seed=1
      ),
  }
