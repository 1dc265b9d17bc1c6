"""The GLUE reader's errors name the file and the line."""

import os
import re

import pytest

from codir_jax import data
from tests.data.glue_tsv import mnli_row
from tests.data.glue_tsv import tsv
from tests.data.glue_tsv import write


def test_malformed_row_names_file_and_line(tmp_path):
  path = write(
      tmp_path,
      'SST-2/train.tsv',
      [
          tsv('sentence', 'label'),
          tsv('good', '1'),
          tsv('bad', '1', 'extra'),
          tsv('fine', '0'),
      ],
  )
  with pytest.raises(ValueError) as e:
    data.load_split('sst2', 'train', data_dir=tmp_path)
  assert f'{path}:3:' in str(e.value) and 'malformed' in str(e.value)
  s = data.load_split('sst2', 'train', data_dir=tmp_path, skip_malformed=True)
  assert s.text_a == ['good', 'fine']


def test_blank_line_in_cola_is_malformed(tmp_path):
  path = write(
      tmp_path,
      'CoLA/dev.tsv',
      [tsv('s', '1', '', 'x'), '', tsv('s', '0', '*', 'y')],
  )
  with pytest.raises(ValueError, match=re.escape(f'{path}:2:')):
    data.load_split('cola', 'dev', data_dir=tmp_path)


def test_bad_header_names_line_1(tmp_path):
  path = write(
      tmp_path,
      'RTE/train.tsv',
      ['index\tsentence1', tsv('0', 'a', 'b', 'entailment')],
  )
  with pytest.raises(ValueError, match=re.escape(f'{path}:1:')):
    data.load_split('rte', 'train', data_dir=tmp_path)


@pytest.mark.parametrize(
    'task, dirname, rows, bad',
    [
        (
            'mnli',
            'MNLI/dev_matched.tsv',
            [
                mnli_row(16, 'h', 'h'),
                mnli_row(16, 'a', 'b', 'neutral'),
                mnli_row(16, 'a', 'b', 'maybe'),
            ],
            'maybe',
        ),
        (
            'rte',
            'RTE/dev.tsv',
            [
                tsv('index', 'sentence1', 'sentence2', 'label'),
                tsv('0', 'a', 'b', 'entailment'),
                tsv('1', 'a', 'b', '1'),
            ],
            '1',
        ),
    ],
)
def test_unknown_label_names_file_and_line(tmp_path, task, dirname, rows, bad):
  path = write(tmp_path, dirname, rows)
  split = os.path.basename(dirname)[:-4]
  with pytest.raises(ValueError) as e:
    data.load_split(task, split, data_dir=tmp_path)
  msg = str(e.value)
  assert f'{path}:3:' in msg and f'unknown label {bad!r}' in msg


@pytest.mark.parametrize('score', ['abc', '5.5', '-1', ''])
def test_bad_stsb_score(tmp_path, score):
  cols = [str(i) for i in range(7)]
  path = write(
      tmp_path,
      'STS-B/dev.tsv',
      [
          tsv(*cols, 's1', 's2', 'score'),
          tsv(*cols, 'a', 'b', '1.0'),
          tsv(*cols, 'a', 'b', score),
      ],
  )
  with pytest.raises(ValueError, match=re.escape(f'{path}:3: unknown label')):
    data.load_split('stsb', 'dev', data_dir=tmp_path)


def test_empty_and_header_only_files(tmp_path):
  path = write(tmp_path, 'RTE/dev.tsv', [])
  with pytest.raises(ValueError, match=re.escape(f'{path} is empty')):
    data.load_split('rte', 'dev', data_dir=tmp_path)
  path = write(
      tmp_path,
      'RTE/train.tsv',
      [tsv('index', 'sentence1', 'sentence2', 'label')],
  )
  with pytest.raises(ValueError, match=re.escape(f'{path} has no data rows')):
    data.load_split('rte', 'train', data_dir=tmp_path)


def test_missing_file_names_expected_path(tmp_path):
  want = os.path.join(tmp_path, 'QNLI', 'dev.tsv')
  with pytest.raises(FileNotFoundError, match=re.escape(f'expected {want}')):
    data.load_split('qnli', 'dev', data_dir=tmp_path)


def test_unknown_task_split_and_source(tmp_path):
  with pytest.raises(ValueError, match='Unknown GLUE task'):
    data.load_split('squad', 'train', data_dir=tmp_path)
  with pytest.raises(ValueError, match='no split'):
    data.load_split('sst2', 'validation', data_dir=tmp_path)
  with pytest.raises(ValueError, match='Unknown GLUE source'):
    data.load_split('sst2', 'train', data_dir=tmp_path, source='parquet')


def test_task_table():
  assert set(data.TASKS) == {
      'cola',
      'sst2',
      'mrpc',
      'stsb',
      'qqp',
      'mnli',
      'qnli',
      'rte',
      'wnli',
      'ax',
  }
  assert data.get_task('mnli').label_names == (
      'contradiction',
      'entailment',
      'neutral',
  )
  assert data.get_task('rte').label_names == ('entailment', 'not_entailment')
  assert data.get_task('STS-B').is_regression
  assert data.get_task('stsb').num_labels == 1
  assert data.get_task('mnli').num_labels == 3
  assert data.get_task('qqp').metric_names == ('accuracy', 'f1')
  assert data.get_task('cola').metric_names == ('mcc',)
  assert not data.get_task('cola').splits['train'].has_header
