"""Every GLUE task's file layout, read from small files."""

import numpy as np
import pytest

from codir_jax import data
from tests.data.glue_tsv import mnli_row
from tests.data.glue_tsv import tsv
from tests.data.glue_tsv import write


def test_cola_without_header(tmp_path):
  write(
      tmp_path,
      'CoLA/train.tsv',
      [
          tsv('gj04', '1', '', "Our friends won't buy this analysis."),
          tsv('gj04', '0', '*', 'They drank the pub.'),
      ],
  )
  s = data.load_split('cola', 'train', data_dir=tmp_path)
  assert s.text_a == [
      "Our friends won't buy this analysis.",
      'They drank the pub.',
  ]
  np.testing.assert_array_equal(s.labels, [1, 0])
  assert s.text_b is None and s.has_labels
  write(
      tmp_path,
      'CoLA/test.tsv',
      [tsv('index', 'sentence'), tsv('0', 'Bill whistled past the house.')],
  )
  t = data.load_split('cola', 'test', data_dir=tmp_path)
  assert t.text_a == ['Bill whistled past the house.']
  assert not t.has_labels and t.labels.tolist() == [-1]


def test_sst2_and_mrpc_bom(tmp_path):
  write(
      tmp_path,
      'SST-2/test.tsv',
      [tsv('index', 'sentence'), tsv('0', 'uneasy mishmash of styles ')],
  )
  s = data.load_split('sst-2', 'test', data_dir=tmp_path)
  assert s.text_a == ['uneasy mishmash of styles '] and s.labels[0] == -1
  header = tsv('Quality', '#1 ID', '#2 ID', '#1 String', '#2 String')
  write(
      tmp_path,
      'MRPC/train.tsv',
      [
          header,
          tsv('1', '1', '2', 'He said "hi', 'She said "hi"'),
          tsv('0', '3', '4', 'a', 'b'),
      ],
      bom=True,
  )
  m = data.load_split('mrpc', 'train', data_dir=tmp_path)
  assert m.text_a == ['He said "hi', 'a']
  assert m.text_b == ['She said "hi"', 'b']
  np.testing.assert_array_equal(m.labels, [1, 0])
  write(
      tmp_path,
      'MRPC/test.tsv',
      [
          'index\t#1 ID\t#2 ID\t#1 String\t#2 String',
          tsv('0', '5', '6', 'x', 'y'),
      ],
  )
  mt = data.load_split('mrpc', 'test', data_dir=tmp_path)
  assert (mt.text_a, mt.text_b, mt.labels.tolist()) == (['x'], ['y'], [-1])


def test_stsb_train_and_test(tmp_path):
  cols = [
      'index',
      'genre',
      'filename',
      'year',
      'old_index',
      'source1',
      'source2',
      'sentence1',
      'sentence2',
  ]
  write(
      tmp_path,
      'STS-B/train.tsv',
      [
          tsv(*cols, 'score'),
          tsv(
              '0', 'g', 'f', '2012', '1', 'n', 'n', 'A man.', 'A guy.', '3.800'
          ),
          tsv('1', 'g', 'f', '2012', '2', 'n', 'n', 'B.', 'C.', '0.000'),
      ],
  )
  s = data.load_split('stsb', 'train', data_dir=tmp_path)
  assert s.labels.dtype == np.float32
  np.testing.assert_allclose(s.labels, [3.8, 0.0], rtol=1e-6)
  assert s.text_a == ['A man.', 'B.'] and s.text_b == ['A guy.', 'C.']
  write(
      tmp_path,
      'STS-B/test.tsv',
      [tsv(*cols), tsv('0', 'g', 'f', '2012', '1', 'n', 'n', 'P.', 'Q.')],
  )
  t = data.load_split('stsb', 'test', data_dir=tmp_path)
  assert t.text_b == ['Q.'] and np.isnan(t.labels).all()
  assert t.labels.dtype == np.float32 and not t.has_labels


def test_qqp(tmp_path):
  write(
      tmp_path,
      'QQP/train.tsv',
      [
          tsv('id', 'qid1', 'qid2', 'question1', 'question2', 'is_duplicate'),
          tsv('7', '1', '2', 'How do I "learn?', 'What is x?', '1'),
          tsv('8', '3', '4', 'Why?', 'Why not?', '0'),
      ],
  )
  s = data.load_split('qqp', 'train', data_dir=tmp_path)
  assert s.text_a == ['How do I "learn?', 'Why?']
  assert s.text_b == ['What is x?', 'Why not?']
  np.testing.assert_array_equal(s.labels, [1, 0])
  write(
      tmp_path,
      'QQP/test.tsv',
      [tsv('id', 'question1', 'question2'), tsv('0', 'q1', 'q2')],
  )
  t = data.load_split('qqp', 'test', data_dir=tmp_path)
  assert (t.text_a, t.text_b, t.labels.tolist()) == (['q1'], ['q2'], [-1])


def test_mnli_all_splits(tmp_path):
  write(
      tmp_path,
      'MNLI/train.tsv',
      [
          mnli_row(12, 'h', 'h'),
          mnli_row(12, 'P0', 'H0', 'neutral'),
          mnli_row(12, 'P1', 'H1', 'contradiction'),
          mnli_row(12, 'P2', 'H2', 'entailment'),
      ],
  )
  s = data.load_split('mnli', 'train', data_dir=tmp_path)
  assert s.text_a == ['P0', 'P1', 'P2'] and s.text_b == ['H0', 'H1', 'H2']
  np.testing.assert_array_equal(s.labels, [2, 0, 1])
  for split, label, want in [
      ('dev_matched', 'entailment', 1),
      ('dev_mismatched', 'contradiction', 0),
  ]:
    write(
        tmp_path,
        f'MNLI/{split}.tsv',
        [mnli_row(16, 'h', 'h'), mnli_row(16, 'p', 'q', label)],
    )
    d = data.load_split('mnli', split, data_dir=tmp_path)
    assert d.labels.tolist() == [want] and d.text_b == ['q']
  for split in ['test_matched', 'test_mismatched']:
    write(
        tmp_path,
        f'MNLI/{split}.tsv',
        [
            mnli_row(10, 'h', 'h'),
            mnli_row(10, 'a', 'b'),
            mnli_row(10, 'c', 'd'),
        ],
    )
    t = data.load_split('mnli', split, data_dir=tmp_path)
    assert t.text_a == ['a', 'c'] and t.labels.tolist() == [-1, -1]
    np.testing.assert_array_equal(t.example_ids, [0, 1])
  with pytest.raises(ValueError, match='no split'):
    data.load_split('mnli', 'dev', data_dir=tmp_path)


def test_qnli_keeps_stray_quotes(tmp_path):
  # With csv's default quoting, the leading quote would swallow the next
  # line and the tab; GLUE files must be read with no quote processing.
  write(
      tmp_path,
      'QNLI/train.tsv',
      [
          tsv('index', 'question', 'sentence', 'label'),
          tsv('0', '"What is the "best" way?', 'It is "so.', 'entailment'),
          tsv('1', "Who's there?", '""', 'not_entailment'),
      ],
  )
  s = data.load_split('qnli', 'train', data_dir=tmp_path)
  assert s.text_a == ['"What is the "best" way?', "Who's there?"]
  assert s.text_b == ['It is "so.', '""']
  np.testing.assert_array_equal(s.labels, [0, 1])
  write(
      tmp_path,
      'QNLI/test.tsv',
      [tsv('index', 'question', 'sentence'), tsv('0', 'q?', '"s')],
  )
  t = data.load_split('qnli', 'test', data_dir=tmp_path)
  assert t.text_b == ['"s'] and t.labels.tolist() == [-1]


@pytest.mark.parametrize(
    'task, dirname, labels, want',
    [
        ('rte', 'RTE', ['not_entailment', 'entailment'], [1, 0]),
        ('wnli', 'WNLI', ['1', '0'], [1, 0]),
    ],
)
def test_rte_wnli(tmp_path, task, dirname, labels, want):
  write(
      tmp_path,
      f'{dirname}/dev.tsv',
      [
          tsv('index', 'sentence1', 'sentence2', 'label'),
          tsv('0', 'A', 'B', labels[0]),
          tsv('1', 'C', 'D', labels[1]),
      ],
  )
  s = data.load_split(task, 'dev', data_dir=tmp_path)
  assert s.text_a == ['A', 'C'] and s.text_b == ['B', 'D']
  np.testing.assert_array_equal(s.labels, want)
  write(
      tmp_path,
      f'{dirname}/test.tsv',
      [tsv('index', 'sentence1', 'sentence2'), tsv('0', 'E', 'F')],
  )
  t = data.load_split(task, 'test', data_dir=tmp_path)
  assert t.text_a == ['E'] and t.labels.tolist() == [-1]


def test_ax_diagnostic(tmp_path):
  write(
      tmp_path,
      'diagnostic/diagnostic.tsv',
      [tsv('index', 'sentence1', 'sentence2'), tsv('0', 'P', 'H')],
  )
  t = data.load_split('ax', 'test', data_dir=tmp_path)
  assert t.text_a == ['P'] and t.text_b == ['H'] and not t.has_labels


def test_crlf_and_odd_characters(tmp_path):
  write(
      tmp_path,
      'SST-2/dev.tsv',
      [tsv('sentence', 'label'), tsv('a\rb \u2028c\x1c', '1'), tsv('d', '0')],
      newline='\r\n',
  )
  s = data.load_split('sst2', 'dev', data_dir=tmp_path)
  assert s.text_a == ['a\rb \u2028c\x1c', 'd']
  np.testing.assert_array_equal(s.labels, [1, 0])
