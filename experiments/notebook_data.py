"""Which task the Colab notebook trains on: real GLUE SST-2 or the toy task.

`choose_task` decides, in this order:

1. `hf_dir` (or the environment variable `CODIR_GLUE_HF_DIR`) names a local
   Hugging Face dataset (`DatasetDict.save_to_disk` of `nyu-mll/glue`
   `sst2`, or a root holding `sst2/`): SST-2 with `source='hf'` from there.
   Asked for explicitly, so any failure raises.
2. `datasets` is importable and the Hub answers (Colab): SST-2 with
   `source='hf'` downloaded into the Hugging Face cache.
3. TensorFlow and tensorflow-datasets are importable and the download
   works: tfds `glue/sst2` prepared under `work_dir`, `source='tfds'`.
4. Otherwise (offline, as in the tests): the generated sentiment task of
   `codir_jax.train.task_data`, written as GLUE TSVs under `work_dir`.

`CODIR_NOTEBOOK_DATA=toy` forces 4; `HF_HUB_OFFLINE=1` or
`HF_DATASETS_OFFLINE=1` skip 2. Network probes time out after a few
seconds, so an offline machine reaches 4 quickly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import socket
from typing import Callable, Mapping

from codir_jax.data import glue

ENV_HF_DIR = "CODIR_GLUE_HF_DIR"
ENV_FORCE = "CODIR_NOTEBOOK_DATA"
TASK = "sst2"


@dataclasses.dataclass(frozen=True)
class TaskChoice:
  """Where the notebook's task comes from.

  Attributes:
    kind: 'hf' | 'tfds' | 'toy'.
    source: config.task.source ('hf', 'tfds' or 'tsv').
    data_dir: config.task.data_dir ('' = the Hugging Face Hub).
    train_limit: first N training examples to use (0 = all).
    eval_limit: first N dev examples to evaluate on (0 = all).
    vocab_texts: training sentences to build the tiny tokenizer from.
    note: one line saying what was chosen and why.
  """

  kind: str
  source: str
  data_dir: str
  train_limit: int
  eval_limit: int
  vocab_texts: tuple[str, ...]
  note: str


def _importable(*names: str) -> bool:
  return all(importlib.util.find_spec(n) is not None for n in names)


def online(host: str, *, timeout_s: float = 3.0) -> bool:
  """True if a TCP connection to host:443 opens within `timeout_s`."""
  try:
    with socket.create_connection((host, 443), timeout=timeout_s):
      return True
  except OSError:
    return False


def _real(
    kind: str,
    source: str,
    data_dir: str,
    *,
    num_train: int,
    num_dev: int,
    why: str,
) -> TaskChoice:
  """Loads SST-2 train once (raises if it cannot) and describes it."""
  train = glue.load_split(TASK, "train", data_dir=data_dir, source=source)
  dev = glue.load_split(TASK, "dev", data_dir=data_dir, source=source)
  n_train, n_dev = min(num_train, len(train)), min(num_dev, len(dev))
  return TaskChoice(
      kind=kind,
      source=source,
      data_dir=data_dir,
      train_limit=n_train,
      eval_limit=n_dev,
      vocab_texts=tuple(train.text_a[:n_train]),
      note=(
          f"data: GLUE SST-2 via source={source!r} ({why}); first"
          f" {n_train} of {len(train)} train, {n_dev} of {len(dev)} dev"
      ),
  )


def _tfds_prepare(work_dir: str) -> str:
  """Downloads and prepares tfds glue/sst2 under work_dir; returns it."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  data_dir = os.path.join(work_dir, "tfds")
  tfds.builder("glue/sst2", data_dir=data_dir).download_and_prepare()
  return data_dir


def choose_task(
    work_dir: str,
    *,
    hf_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    num_train: int = 3000,
    num_dev: int = 872,
    is_online: Callable[[str], bool] = online,
) -> TaskChoice:
  """Picks the notebook's task (see the module docstring for the order).

  Args:
    work_dir: scratch directory (toy TSVs, tfds data).
    hf_dir: local saved Hugging Face SST-2; None reads `CODIR_GLUE_HF_DIR`.
    environ: environment to read (default `os.environ`).
    num_train: training examples of real SST-2 to use.
    num_dev: dev examples of real SST-2 to evaluate on (872 = all).
    is_online: host -> reachable; tests pass a stub.

  Returns:
    The choice; its data loads with `glue.load_split`.
  """
  env = os.environ if environ is None else environ
  hf_dir = env.get(ENV_HF_DIR, "") if hf_dir is None else hf_dir
  force = env.get(ENV_FORCE, "auto")
  skipped = []
  if hf_dir and force != "toy":
    return _real(
        "hf",
        "hf",
        hf_dir,
        num_train=num_train,
        num_dev=num_dev,
        why=f"local dataset {hf_dir}",
    )
  if force != "toy":
    offline = any(
        env.get(k, "0") not in ("", "0")
        for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    if not _importable("datasets"):
      skipped.append("`datasets` not installed")
    elif offline or not is_online("huggingface.co"):
      skipped.append("Hugging Face Hub unreachable")
    else:
      try:
        return _real(
            "hf",
            "hf",
            "",
            num_train=num_train,
            num_dev=num_dev,
            why="Hugging Face Hub",
        )
      except Exception as e:  # pylint: disable=broad-except
        skipped.append(f"Hub load failed: {type(e).__name__}: {e}"[:200])
    if not _importable("tensorflow", "tensorflow_datasets"):
      skipped.append("TensorFlow/tfds not installed")
    elif not is_online("dl.fbaipublicfiles.com"):
      skipped.append("tfds download host unreachable")
    else:
      try:
        return _real(
            "tfds",
            "tfds",
            _tfds_prepare(work_dir),
            num_train=num_train,
            num_dev=num_dev,
            why="tensorflow-datasets",
        )
      except Exception as e:  # pylint: disable=broad-except
        skipped.append(f"tfds failed: {type(e).__name__}: {e}"[:200])
  else:
    skipped.append(f"{ENV_FORCE}=toy")
  # Imported here: codir_jax.train is heavy and only the toy task needs it.
  from codir_jax.train import task_data  # pylint: disable=g-import-not-at-top

  data_dir = task_data.write_demo_task(
      os.path.join(work_dir, "glue"), num_train=256, num_dev=128, seed=0
  )
  texts, _ = task_data.demo_sentences(3000, 0)
  return TaskChoice(
      kind="toy",
      source="tsv",
      data_dir=data_dir,
      train_limit=0,
      eval_limit=0,
      vocab_texts=tuple(texts),
      note="data: the generated sentiment task (" + "; ".join(skipped) + ")",
  )
