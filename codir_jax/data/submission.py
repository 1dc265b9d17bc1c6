"""GLUE benchmark submission files (gluebenchmark.com).

The server expects one TSV per task in one zip: CoLA.tsv, SST-2.tsv,
MRPC.tsv, STS-B.tsv, QQP.tsv, MNLI-m.tsv, MNLI-mm.tsv, QNLI.tsv, RTE.tsv,
WNLI.tsv and AX.tsv (the diagnostic set, predicted by the MNLI model). Each
has the header `index\\tprediction` and one row per test example in index
order. String-labelled tasks (MNLI, AX, QNLI, RTE) write label names, the
0/1 tasks write the digit, and STS-B writes the score clipped to [0, 5] with
three decimals.
"""

import os

import numpy as np

from codir_jax.data import tasks as tasks_lib

HEADER = 'index\tprediction'
ALL_FILES = tuple(
    name
    for spec in tasks_lib.TASKS.values()
    for name in spec.submission_files.values()
)


def submission_file_name(task: str, split: str = 'test') -> str:
  """E.g. ('mnli', 'test_mismatched') -> 'MNLI-mm.tsv'."""
  spec = tasks_lib.get_task(task)
  if split not in spec.submission_files:
    raise ValueError(
        f'{spec.name}/{split} is not submitted to GLUE; submitted splits:'
        f' {sorted(spec.submission_files)}'
    )
  return spec.submission_files[split]


def format_predictions(task: str, predictions: np.ndarray) -> list[str]:
  """Prediction strings as the server expects them.

  Args:
    task: task key.
    predictions: [N] class indices or [N, C] logits (argmax is taken); for
      STS-B [N] or [N, 1] scores.

  Returns:
    N strings: label names, or STS-B scores clipped to [0, 5], 3 decimals.
  """
  spec = tasks_lib.get_task(task)
  p = np.asarray(predictions)
  if spec.is_regression:
    if p.ndim == 2 and p.shape[1] == 1:
      p = p[:, 0]
    if p.ndim != 1:
      raise ValueError(f'STS-B predictions must be [N] or [N, 1]: {p.shape}')
    return [f'{x:.3f}' for x in np.clip(p.astype(np.float64), 0.0, 5.0)]
  if p.ndim == 2:
    p = np.argmax(p, axis=-1)
  if p.ndim != 1:
    raise ValueError(f'predictions must be [N] or [N, C]: {p.shape}')
  p = p.astype(np.int64)
  bad = (p < 0) | (p >= len(spec.label_names))
  if bad.any():
    raise ValueError(
        f'{spec.name}: predicted class {p[bad][0]} outside'
        f' {list(spec.label_names)}'
    )
  names = np.asarray(spec.label_names)
  return names[p].tolist()


def write_submission(
    out_dir: str | os.PathLike[str],
    task: str,
    split: str,
    predictions: np.ndarray,
    example_ids: np.ndarray | None = None,
) -> str:
  """Writes one GLUE submission file and returns its path.

  Args:
    out_dir: directory to write into (created if needed).
    task: task key (`ax` for the diagnostic set).
    split: `test`, or for MNLI `test_matched` / `test_mismatched`.
    predictions: [N] class indices, [N, C] logits, or STS-B scores.
    example_ids: [N] ids (index in the test split) of the predictions, in
      any order, e.g. the concatenated `example_ids` of the eval batches.
      Rows with id -1 (batch padding) are dropped. The remaining ids must be
      exactly 0..M-1. None means predictions are already in index order.

  Returns:
    The path of the written file.
  """
  name = submission_file_name(task, split)
  p = np.asarray(predictions)
  if example_ids is None:
    ids = np.arange(len(p))
  else:
    ids = np.asarray(example_ids).astype(np.int64)
    if ids.shape != (len(p),):
      raise ValueError(f'example_ids {ids.shape} vs {len(p)} predictions')
    keep = ids >= 0
    p, ids = p[keep], ids[keep]
    order = np.argsort(ids, kind='stable')
    p, ids = p[order], ids[order]
    if not np.array_equal(ids, np.arange(len(ids))):
      raise ValueError(
          f'{name}: example ids must cover 0..{len(ids) - 1} exactly once'
      )
  if len(p) == 0:
    raise ValueError(f'{name}: no predictions')
  rows = format_predictions(task, p)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(os.fspath(out_dir), name)
  with open(path, 'w', encoding='utf-8', newline='\n') as f:
    f.write(HEADER + '\n')
    f.writelines(f'{i}\t{r}\n' for i, r in enumerate(rows))
  return path
