"""The GLUE splits a run needs, tokenised with the model's own tokenizer.

Also writes the embedded demo task: a small templated sentiment data set in
the SST-2 file layout, generated from a seed (no download, no licence
issue), so `configs/demo.py` runs anywhere.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from codir_jax.data import glue
from codir_jax.data import tasks
from codir_jax.data import tokenize
from codir_jax.models import hf_io


@dataclasses.dataclass(frozen=True)
class TaskData:
  spec: tasks.TaskSpec
  train: tokenize.TokenizedSplit | None
  eval: tokenize.TokenizedSplit | None
  splits: dict[str, tokenize.TokenizedSplit]  # Prediction splits.
  tokenizer: object


def eval_split_name(spec: tasks.TaskSpec) -> str:
  """'dev', or MNLI's 'dev_matched'."""
  for name in ("dev", "dev_matched"):
    if name in spec.splits:
      return name
  raise ValueError(
      f"task {spec.name!r} has no dev split: {sorted(spec.splits)}"
  )


def _subset(split: glue.GlueSplit, limit: int, key: str) -> glue.GlueSplit:
  if limit < 0:
    raise ValueError(f"{key} must be >= 0 (0 = all), got {limit}")
  if not limit or limit >= len(split):
    return split
  return dataclasses.replace(
      split,
      text_a=split.text_a[:limit],
      text_b=None if split.text_b is None else split.text_b[:limit],
      labels=split.labels[:limit],
  )


def _load(d, split: str, limit: int, key: str, tokenizer):
  raw = glue.load_split(d.task, split, data_dir=d.data_dir, source=d.source)
  raw = _subset(raw, limit, key)
  return tokenize.tokenize_split(raw, tokenizer, max_len=d.max_len)


def _load_task(
    d, tokenizer_path: str, *, train: bool, dev: bool, test: bool
) -> TaskData:
  spec = tasks.get_task(d.task)
  tok = hf_io.load_tokenizer(tokenizer_path)
  train_split = dev_split = None
  if train:
    train_split = _load(
        d, "train", d.train_limit, "config.task.train_limit", tok
    )
  if dev:
    dev_split = _load(
        d, eval_split_name(spec), d.eval_limit, "config.task.eval_limit", tok
    )
  splits = {}
  if test:
    names = [s for s in spec.splits if s.startswith("test")]
    if not names:
      raise ValueError(f"task {spec.name!r} has no test split")
    splits = {s: _load(d, s, 0, "", tok) for s in names}
  return TaskData(
      spec=spec, train=train_split, eval=dev_split, splits=splits, tokenizer=tok
  )


def load_train(d, tokenizer_path: str) -> TaskData:
  """Train split (first `train_limit`) and dev split (first `eval_limit`).

  Args:
    d: `settings.Data` (task, source, data_dir, max_len, limits).
    tokenizer_path: HF directory whose tokenizer to use.
  """
  return _load_task(d, tokenizer_path, train=True, dev=True, test=False)


def load_eval(d, tokenizer_path: str) -> TaskData:
  """The dev split (first `eval_limit`); `d` as in `load_train`."""
  return _load_task(d, tokenizer_path, train=False, dev=True, test=False)


def load_predict(d, tokenizer_path: str) -> TaskData:
  """Every test split of the task (MNLI: matched and mismatched)."""
  return _load_task(d, tokenizer_path, train=False, dev=False, test=True)


# --- the embedded demo task -------------------------------------------------

_POS = (
    "good",
    "great",
    "wonderful",
    "moving",
    "funny",
    "clever",
    "superb",
    "charming",
    "delightful",
    "gripping",
)
_NEG = (
    "bad",
    "dull",
    "awful",
    "boring",
    "clumsy",
    "tedious",
    "weak",
    "painful",
    "forgettable",
    "lifeless",
)
_NOUNS = (
    "film",
    "movie",
    "story",
    "cast",
    "script",
    "plot",
    "ending",
    "direction",
    "soundtrack",
    "performance",
)
_LEADS = ("the", "this", "that", "their", "its")
_INTENS = ("", "very ", "truly ", "rather ", "quite ", "remarkably ")
_TAILS = (
    "",
    " , overall",
    " from start to finish",
    " , i think",
    " at times",
    " for most of its length",
)


def _clause(rng, positive: bool) -> str:
  negate = rng.random() < 0.3
  pool = _POS if positive != negate else _NEG
  return (
      f"{rng.choice(_LEADS)} {rng.choice(_NOUNS)} is"
      f"{' not' if negate else ''} {rng.choice(_INTENS)}{rng.choice(pool)}"
  )


def demo_sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
  """`n` templated sentences with sentiment labels (1 = positive).

  A negation ("is not <adj>") flips a clause, and in "A , but B" the label
  follows B, so word counts alone do not solve the task.
  """
  rng = np.random.default_rng(seed)
  texts, labels = [], np.zeros(n, np.int32)
  for i in range(n):
    positive = bool(rng.integers(2))
    text = _clause(rng, positive)
    if rng.random() < 0.4:
      text = f"{_clause(rng, not positive)} , but {text}"
    texts.append(f"{text}{rng.choice(_TAILS)} ")
    labels[i] = int(positive)
  return texts, labels


def write_demo_task(
    data_dir: str, *, num_train: int, num_dev: int, seed: int
) -> str:
  """Writes SST-2/{train,dev}.tsv under `data_dir`; returns `data_dir`."""
  task_dir = os.path.join(data_dir, tasks.get_task("sst2").dir_name)
  os.makedirs(task_dir, exist_ok=True)
  for split, n, s in (("train", num_train, seed), ("dev", num_dev, seed + 1)):
    texts, labels = demo_sentences(n, s)
    path = os.path.join(task_dir, f"{split}.tsv")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      f.write("sentence\tlabel\n")
      for t, y in zip(texts, labels):
        f.write(f"{t}\t{y}\n")
    os.replace(tmp, path)
  return data_dir
