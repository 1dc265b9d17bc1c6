"""The shared real GLUE files read to exactly the counts of their README."""

import numpy as np
import pytest

from codir_jax import data


@pytest.mark.parametrize(
    'task, split, rows, label_counts',
    [
        ('sst2', 'train', 67_349, [29_780, 37_569]),
        ('sst2', 'dev', 872, [428, 444]),
        ('mrpc', 'train', 3_668, [1_194, 2_474]),
        ('mrpc', 'dev', 408, [129, 279]),
        ('stsb', 'train', 5_749, None),
        ('stsb', 'dev', 1_500, None),
    ],
)
def test_counts(glue_dir, task, split, rows, label_counts):
  s = data.load_split(task, split, data_dir=glue_dir)
  assert len(s) == rows
  assert len(s.text_a) == rows and s.has_labels
  np.testing.assert_array_equal(s.example_ids, np.arange(rows))
  if label_counts is None:
    assert s.labels.dtype == np.float32
    assert s.labels.min() >= 0.0 and s.labels.max() <= 5.0
    assert len(s.text_b) == rows
  else:
    assert s.labels.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(s.labels), label_counts)


def test_first_rows(glue_dir):
  dev = data.load_split('sst2', 'dev', data_dir=glue_dir)
  assert dev.text_a[0] == "it 's a charming and often affecting journey . "
  assert dev.labels[0] == 1 and dev.text_b is None
  train = data.load_split('sst2', 'train', data_dir=glue_dir)
  assert train.text_a[0] == 'hide new secretions from the parental units '
  assert train.labels[0] == 0

  mrpc = data.load_split('mrpc', 'dev', data_dir=glue_dir)
  assert mrpc.text_a[0].startswith('He said the foodservice pie business')
  # An unbalanced quote must stay verbatim (no csv quote processing).
  assert mrpc.text_b[0] == (
      '"The foodservice pie business does not fit our long-term growth'
      ' strategy.'
  )
  assert mrpc.labels[0] == 1
  mrpc_train = data.load_split('mrpc', 'train', data_dir=glue_dir)
  assert mrpc_train.text_a[0].startswith('Amrozi accused his brother, whom')
  assert '"the witness"' in mrpc_train.text_a[0]

  stsb = data.load_split('stsb', 'dev', data_dir=glue_dir)
  assert stsb.text_a[0] == 'A man with a hard hat is dancing.'
  assert stsb.text_b[0] == 'A man wearing a hard hat is dancing.'
  np.testing.assert_allclose(stsb.labels[:2], [5.0, 4.75])


def test_real_dev_batches(glue_dir, minilm_tokenizer):
  s = data.load_split('mrpc', 'dev', data_dir=glue_dir)
  ds = data.tokenize_split(s, minilm_tokenizer, max_len=128)
  it = data.BatchIterator(ds, batch_size=32, shuffle=False, num_epochs=1)
  batches = list(it)
  assert len(batches) == 13  # ceil(408 / 32)
  ids = np.concatenate([b['example_ids'][b['valid']] for b in batches])
  np.testing.assert_array_equal(ids, np.arange(408))
  labels = np.concatenate([b['labels'][b['valid']] for b in batches])
  np.testing.assert_array_equal(labels, s.labels)
  assert {b['input_ids'].shape[1] for b in batches} <= {16, 32, 64, 128}
