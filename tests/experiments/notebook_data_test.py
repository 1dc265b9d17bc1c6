"""experiments/notebook_data.py: the notebook's real-GLUE vs toy decision."""

import os

import pytest

from codir_jax.data import glue
from tests.train import assets  # noqa: F401  (puts the repo on sys.path)
from experiments import notebook_data  # noqa: E402


def _never_online(host):
  raise AssertionError(f"probed {host} although it should not")


def _save_sst2(path, n_train=40, n_dev=12):
  """A saved DatasetDict with the Hub's sst2 schema; returns its texts."""
  datasets = pytest.importorskip("datasets")
  features = datasets.Features(
      {
          "sentence": datasets.Value("string"),
          "label": datasets.ClassLabel(names=["negative", "positive"]),
          "idx": datasets.Value("int32"),
      }
  )
  texts = {
      "train": [f"train sentence {i}" for i in range(n_train)],
      "validation": [f"dev sentence {i}" for i in range(n_dev)],
  }
  datasets.DatasetDict(
      {
          k: datasets.Dataset.from_dict(
              {
                  "sentence": v,
                  "label": [i % 2 for i in range(len(v))],
                  "idx": list(range(len(v))),
              },
              features=features,
          )
          for k, v in texts.items()
      }
  ).save_to_disk(str(path))
  return texts


def test_local_hf_dir_from_argument_and_environment(tmp_path):
  texts = _save_sst2(tmp_path / "glue" / "sst2")
  root = str(tmp_path / "glue")
  for kwargs in (
      dict(hf_dir=root, environ={}),
      dict(environ={notebook_data.ENV_HF_DIR: root}),
  ):
    c = notebook_data.choose_task(
        str(tmp_path / "work"), num_train=30, is_online=_never_online, **kwargs
    )
    assert (c.kind, c.source, c.data_dir) == ("hf", "hf", root)
    assert (c.train_limit, c.eval_limit) == (30, 12)
    assert list(c.vocab_texts) == texts["train"][:30]
    assert "source='hf'" in c.note and root in c.note
    dev = glue.load_split("sst2", "dev", data_dir=c.data_dir, source=c.source)
    assert list(dev.text_a) == texts["validation"]


def test_explicit_hf_dir_that_does_not_load_raises(tmp_path):
  pytest.importorskip("datasets")
  with pytest.raises(FileNotFoundError):
    notebook_data.choose_task(
        str(tmp_path),
        hf_dir=str(tmp_path / "nope"),
        environ={},
        is_online=_never_online,
    )


def test_offline_falls_back_to_the_toy_task(tmp_path):
  probed = []

  def offline(host):
    probed.append(host)
    return False

  c = notebook_data.choose_task(str(tmp_path), environ={}, is_online=offline)
  assert (c.kind, c.source, c.train_limit, c.eval_limit) == ("toy", "tsv", 0, 0)
  assert c.note.startswith("data: the generated sentiment task")
  assert os.path.commonpath([c.data_dir, str(tmp_path)]) == str(tmp_path)
  train = glue.load_split("sst2", "train", data_dir=c.data_dir)
  assert len(train) == 256 and len(c.vocab_texts) == 3000
  has_datasets = notebook_data._importable("datasets")
  assert ("huggingface.co" in probed) == has_datasets


def test_hf_offline_env_skips_the_hub_and_force_toy_skips_all(tmp_path):
  hosts = []
  c = notebook_data.choose_task(
      str(tmp_path),
      environ={"HF_HUB_OFFLINE": "1"},
      is_online=lambda h: hosts.append(h) or False,
  )
  assert c.kind == "toy" and "huggingface.co" not in hosts
  c = notebook_data.choose_task(
      str(tmp_path),
      is_online=_never_online,
      environ={
          notebook_data.ENV_FORCE: "toy",
          notebook_data.ENV_HF_DIR: str(tmp_path / "ignored"),
      },
  )
  assert c.kind == "toy" and "CODIR_NOTEBOOK_DATA=toy" in c.note


def test_hub_reachable_but_load_fails_falls_back(tmp_path, monkeypatch):
  pytest.importorskip("datasets")
  calls = []

  def failing_load(task, split, *, data_dir, source="tsv"):
    if source == "hf":
      calls.append((task, split, data_dir))
      raise ConnectionError("no route to the Hub")
    return glue.read_glue_tsv(data_dir, task, split)

  monkeypatch.setattr(notebook_data.glue, "load_split", failing_load)
  hosts = []
  c = notebook_data.choose_task(
      str(tmp_path),
      environ={},
      is_online=lambda h: hosts.append(h) or h == "huggingface.co",
  )
  assert calls == [("sst2", "train", "")]
  assert c.kind == "toy" and "Hub load failed: ConnectionError" in c.note
  assert hosts[0] == "huggingface.co"
