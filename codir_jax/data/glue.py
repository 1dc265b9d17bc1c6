"""GLUE splits as plain in-memory columns, read from TSV, tfds or HF.

Three sources share one result type, `GlueSplit`:

* `source='tsv'` (default): the original GLUE TSV directories
  (`<data_dir>/<Task>/<split>.tsv`, as written by `download_glue_data.py`),
  read by a direct reader in this module. No TensorFlow, no tfds.
* `source='tfds'`: the tensorflow-datasets `glue/<task>` builder over a
  prepared `data_dir` (`tfds_source.py`); needs the optional TensorFlow
  extra in `requirements-tfds.txt`. It never downloads.
* `source='hf'`: the Hugging Face `datasets` GLUE (`nyu-mll/glue`) from a
  `save_to_disk` directory, a cache_dir or the Hub (`hf_source.py`); needs
  the optional extra in `requirements-hf.txt`.

Why a direct reader and not a project-defined tfds builder (array_record +
`tfds.data_source` + grain) for the local files:

* Speed: reading a whole TSV into Python lists is fast (SST-2 train,
  67k rows: 0.03-0.1 s; a synthetic MNLI-train-shaped file, 393k rows and
  192 MB: 1.4 s on the 2-core dev machine), far below the batch
  tokenisation that follows and that needs the whole split in memory
  anyway. A builder adds a prepare pass that writes array_record shards and
  per-record deserialisation on every read, for no gain: random access into
  records is not needed when the tokenised split is a few MB of numpy.
* Simplicity: the GLUE quirks (CoLA without header, MRPC's BOM, no quote
  processing, MNLI's per-split column counts) are a table in `tasks.py`
  plus 60 lines here, and errors can name the exact file and line. A
  builder would also need versioning and a cache directory to invalidate.
* Dependencies: only numpy. Shuffling, sharding and checkpointable
  position are done on integer indices in `pipeline.py`, which is all that
  grain would contribute here.

Every example's id is its index in its split (0..N-1 in file order), which
the contrastive memory bank keys on.
"""

import codecs
import os
from typing import NoReturn

import numpy as np

from codir_jax.data import tasks as tasks_lib
from codir_jax.data import utf8
from codir_jax.data.split import NO_LABEL_FLOAT
from codir_jax.data.split import NO_LABEL_INT
from codir_jax.data.split import STSB_RANGE
from codir_jax.data.split import GlueSplit

__all__ = [
    'GlueSplit',
    'NO_LABEL_FLOAT',
    'NO_LABEL_INT',
    'STSB_RANGE',
    'load_split',
    'read_glue_tsv',
    'tsv_path',
]


def tsv_path(data_dir: str | os.PathLike[str], task: str, split: str) -> str:
  """Path of `task`/`split` in the original GLUE layout under `data_dir`."""
  spec = tasks_lib.get_task(task)
  return os.path.join(os.fspath(data_dir), spec.dir_name, spec.file_name(split))


def _read_lines(path: str) -> list[str]:
  """Lines of `path`, split on '\\n' only (text may hold '\\r', U+2028...)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'GLUE file not found: expected {path}')
  with open(path, 'rb') as f:
    data = f.read()
  # Drop MRPC's BOM; decoding bytes keeps lone '\r' inside text.
  bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
  try:
    text = data[bom:].decode('utf-8')
  except UnicodeDecodeError as e:
    raise utf8.not_utf8(path, bom + e.start) from e
  if not text.strip():
    raise ValueError(f'{path} is empty')
  if '\r\n' in text:
    text = text.replace('\r\n', '\n')
  lines = text.split('\n')
  if lines[-1] == '':
    lines.pop()
  return lines


def read_glue_tsv(
    data_dir: str | os.PathLike[str],
    task: str,
    split: str,
    *,
    skip_malformed: bool = False,
) -> GlueSplit:
  """Reads one split from a GLUE TSV directory without TensorFlow.

  Fields are split on tabs only: quotes are ordinary characters
  (csv.QUOTE_NONE semantics), so text such as `"the witness` stays verbatim.

  Args:
    data_dir: root of the GLUE download (holding `CoLA/`, `SST-2/`, ...).
    task: task key (`cola`, `sst2`, `mrpc`, `stsb`, `qqp`, `mnli`, `qnli`,
      `rte`, `wnli`, `ax`).
    split: `train`, `dev`, `test` (MNLI: `dev_matched`, `dev_mismatched`,
      `test_matched`, `test_mismatched`).
    skip_malformed: drop rows with the wrong number of fields instead of
      raising. Ids stay the index among the kept rows.

  Returns:
    The split as columns.

  Raises:
    FileNotFoundError: the file is missing (the message names the path).
    ValueError: the file is not UTF-8, is empty or has no data rows, a row
      has the wrong number of fields, or a label is unknown (the message
      names file and 1-based line number).
  """
  spec = tasks_lib.get_task(task)
  layout = spec.layout(split)
  path = tsv_path(data_dir, task, split)
  lines = _read_lines(path)
  n = layout.num_fields
  start = 1 if layout.has_header else 0
  if layout.has_header:
    header = lines[0].split('\t')
    if len(header) != n:
      raise ValueError(
          f'{path}:1: header has {len(header)} tab-separated fields, expected'
          f' {n} for {spec.name}/{split}'
      )
  if len(lines) <= start:
    raise ValueError(f'{path} has no data rows')

  col_a, col_b, col_y = layout.text_a, layout.text_b, layout.label
  text_a, text_b, raw_labels, line_nos = [], [], [], []
  for line_no, line in enumerate(lines[start:], start=start + 1):
    fields = line.split('\t')
    if len(fields) != n:
      if skip_malformed:
        continue
      raise ValueError(
          f'{path}:{line_no}: malformed row: expected {n} tab-separated'
          f' fields for {spec.name}/{split}, got {len(fields)}:'
          f' {line[:80]!r}'
      )
    text_a.append(fields[col_a])
    if col_b is not None:
      text_b.append(fields[col_b])
    if col_y is not None:
      raw_labels.append(fields[col_y])
      line_nos.append(line_no)
  if not text_a:
    raise ValueError(f'{path}: no well-formed data rows')

  if col_y is None:
    fill = NO_LABEL_FLOAT if spec.is_regression else NO_LABEL_INT
    dtype = np.float32 if spec.is_regression else np.int32
    labels = np.full(len(text_a), fill, dtype)
  else:
    labels = _parse_labels(spec, raw_labels, path, line_nos)
  return GlueSplit(
      task=spec.name,
      split=split,
      text_a=text_a,
      text_b=text_b if col_b is not None else None,
      labels=labels,
      has_labels=col_y is not None,
  )


def _parse_labels(
    spec: tasks_lib.TaskSpec,
    raw: list[str],
    path: str,
    line_nos: list[int],
) -> np.ndarray:
  """Label strings -> int32 indices or float32 scores, with located errors."""

  def fail(i: int, why: str) -> NoReturn:
    raise ValueError(
        f'{path}:{line_nos[i]}: unknown label {raw[i]!r} for task'
        f' {spec.name} ({why})'
    )

  if spec.is_regression:
    out = np.empty(len(raw), np.float32)
    lo, hi = STSB_RANGE
    for i, value in enumerate(raw):
      try:
        score = float(value)
      except ValueError:
        fail(i, f'expected a score in [{lo}, {hi}]')
      if not lo <= score <= hi:
        fail(i, f'expected a score in [{lo}, {hi}]')
      out[i] = score
    return out
  index = {name: i for i, name in enumerate(spec.label_names)}
  out = np.empty(len(raw), np.int32)
  for i, value in enumerate(raw):
    k = index.get(value)
    if k is None:
      fail(i, f'expected one of {list(spec.label_names)}')
    out[i] = k
  return out


def load_split(
    task: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str],
    source: str = 'tsv',
    skip_malformed: bool = False,
) -> GlueSplit:
  """Loads one GLUE split from TSV files, tensorflow-datasets or HF datasets.

  Args:
    task: task key, e.g. `sst2` (see `tasks.TASKS`).
    split: split name, e.g. `train`, `dev`, `dev_matched`, `test`.
    data_dir: GLUE TSV root (`source='tsv'`), tfds data_dir holding a
      prepared `glue/<task>` (`source='tfds'`), or for `source='hf'` a
      `save_to_disk` directory or datasets cache_dir ('' = the Hub; see
      `hf_source.py`).
    source: `tsv` (no extra), `tfds` (needs `requirements-tfds.txt`) or
      `hf` (Hugging Face `nyu-mll/glue`, needs `requirements-hf.txt`).
    skip_malformed: TSV only; see `read_glue_tsv`.

  Returns:
    The split; ids are the index in the split.
  """
  if source == 'tsv':
    return read_glue_tsv(data_dir, task, split, skip_malformed=skip_malformed)
  if source == 'tfds':
    # Lazy: keeps tfds and TensorFlow out of the default path.
    from codir_jax.data import tfds_source

    return tfds_source.load_tfds_split(task, split, data_dir=data_dir)
  if source == 'hf':
    # Lazy: keeps the optional `datasets` extra out of the default path.
    from codir_jax.data import hf_source

    return hf_source.load_hf_split(task, split, data_dir=data_dir)
  raise ValueError(f"Unknown GLUE source {source!r}; use 'tsv', 'tfds' or 'hf'")
