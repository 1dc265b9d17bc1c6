"""GLUE submission files: names, header, label names, STS-B format."""

import os

import numpy as np
import pytest

from codir_jax import data
from codir_jax.data import submission


def read(path):
  with open(path, encoding='utf-8') as f:
    return f.read().split('\n')


def test_file_names():
  assert sorted(submission.ALL_FILES) == sorted(
      [
          'CoLA.tsv',
          'SST-2.tsv',
          'MRPC.tsv',
          'STS-B.tsv',
          'QQP.tsv',
          'MNLI-m.tsv',
          'MNLI-mm.tsv',
          'QNLI.tsv',
          'RTE.tsv',
          'WNLI.tsv',
          'AX.tsv',
      ]
  )
  assert data.submission_file_name('mnli', 'test_matched') == 'MNLI-m.tsv'
  assert data.submission_file_name('mnli', 'test_mismatched') == 'MNLI-mm.tsv'
  assert data.submission_file_name('ax') == 'AX.tsv'
  with pytest.raises(ValueError, match='not submitted'):
    data.submission_file_name('mnli', 'test')


def test_mnli_label_names_from_logits(tmp_path):
  logits = np.eye(3)[[1, 2, 0]]
  path = data.write_submission(tmp_path, 'mnli', 'test_mismatched', logits)
  assert os.path.basename(path) == 'MNLI-mm.tsv'
  assert read(path) == [
      'index\tprediction',
      '0\tentailment',
      '1\tneutral',
      '2\tcontradiction',
      '',
  ]


@pytest.mark.parametrize(
    'task, name, want',
    [
        ('rte', 'RTE.tsv', ['entailment', 'not_entailment']),
        ('qnli', 'QNLI.tsv', ['entailment', 'not_entailment']),
        ('ax', 'AX.tsv', ['contradiction', 'entailment']),
        ('cola', 'CoLA.tsv', ['0', '1']),
        ('sst2', 'SST-2.tsv', ['0', '1']),
        ('qqp', 'QQP.tsv', ['0', '1']),
        ('wnli', 'WNLI.tsv', ['0', '1']),
    ],
)
def test_string_and_digit_labels(tmp_path, task, name, want):
  path = data.write_submission(tmp_path, task, 'test', np.array([0, 1]))
  assert os.path.basename(path) == name
  assert read(path)[1:3] == [f'0\t{want[0]}', f'1\t{want[1]}']


def test_stsb_clipped_three_decimals(tmp_path):
  path = data.write_submission(
      tmp_path, 'stsb', 'test', np.array([[-0.5], [2.34567], [7.0], [5.0]])
  )
  assert read(path) == [
      'index\tprediction',
      '0\t0.000',
      '1\t2.346',
      '2\t5.000',
      '3\t5.000',
      '',
  ]


def test_example_ids_reorder_and_drop_padding(tmp_path):
  ids = np.array([2, 0, -1, 1, -1])
  preds = np.array([1, 0, 1, 1, 0])
  path = data.write_submission(tmp_path, 'mrpc', 'test', preds, ids)
  assert read(path) == ['index\tprediction', '0\t0', '1\t1', '2\t1', '']


def test_bad_submissions(tmp_path):
  with pytest.raises(ValueError, match='exactly once'):
    data.write_submission(
        tmp_path, 'rte', 'test', np.array([0, 1]), np.array([0, 2])
    )
  with pytest.raises(ValueError, match='exactly once'):
    data.write_submission(
        tmp_path, 'rte', 'test', np.array([0, 1]), np.array([0, 0])
    )
  with pytest.raises(ValueError, match='outside'):
    data.write_submission(tmp_path, 'rte', 'test', np.array([0, 2]))
  with pytest.raises(ValueError, match='no predictions'):
    data.write_submission(tmp_path, 'rte', 'test', np.zeros(0, int))
