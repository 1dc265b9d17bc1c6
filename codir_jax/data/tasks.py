"""The GLUE task table: file layout, label names and metrics of every task.

One `TaskSpec` per task describes everything the readers, the metrics and the
submission writer need. Column indices refer to the original GLUE download
layout written by `download_glue_data.py` (`<root>/<dir>/<split>.tsv`, tab
separated, no quoting). Split names are the file stems: `train`, `dev`, `test`
and for MNLI `dev_matched`, `dev_mismatched`, `test_matched`,
`test_mismatched`.

Label indices follow the GLUE submission format (the label-name order that
the reference `run_glue` processors use): MNLI is
contradiction/entailment/neutral, QNLI and RTE are entailment/not_entailment,
and the 0/1 tasks keep their integer value as the index.
"""

import dataclasses
from typing import Mapping

# Metric names that `metrics.glue_metrics` knows.
ACCURACY = 'accuracy'
F1 = 'f1'
MCC = 'mcc'
PEARSON = 'pearson'
SPEARMAN = 'spearman'


@dataclasses.dataclass(frozen=True)
class SplitLayout:
  """Where the fields of one split live in its TSV file.

  Attributes:
    num_fields: exact number of tab-separated fields per row.
    has_header: whether the first line is a header (CoLA train/dev have none).
    text_a: column of the first sentence.
    text_b: column of the second sentence, or None for single-sentence tasks.
    label: column of the label, or None for unlabelled (test) splits.
  """

  num_fields: int
  has_header: bool
  text_a: int
  text_b: int | None
  label: int | None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """Static description of one GLUE task.

  Attributes:
    name: lower-case task key (`cola`, `sst2`, ...).
    dir_name: directory in the GLUE download (`CoLA`, `SST-2`, ...).
    splits: split name -> layout of `<dir_name>/<split>.tsv`.
    label_names: class names in label-index order; () for regression.
    is_regression: True for STS-B (float labels in [0, 5]).
    metric_names: the GLUE dev metrics of the task.
    tfds_name: builder config in tensorflow-datasets (`glue/<tfds_name>`).
    tfds_splits: our split name -> tfds split name.
    tfds_text: tfds feature names of (text_a, text_b).
    tfds_label_names: label names of the tfds ClassLabel (None if regression
      or identical to `label_names`); used to remap tfds label indices.
    submission_files: split name -> file name for the GLUE server.
    file_names: split name -> file name when it is not `<split>.tsv`.
  """

  name: str
  dir_name: str
  splits: Mapping[str, SplitLayout]
  label_names: tuple[str, ...]
  is_regression: bool
  metric_names: tuple[str, ...]
  tfds_name: str
  tfds_splits: Mapping[str, str]
  tfds_text: tuple[str, str | None]
  tfds_label_names: tuple[str, ...] | None
  submission_files: Mapping[str, str]
  file_names: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def num_labels(self) -> int:
    """Output width of the classifier head (1 for regression)."""
    return 1 if self.is_regression else len(self.label_names)

  @property
  def is_pair(self) -> bool:
    return self.tfds_text[1] is not None

  def layout(self, split: str) -> SplitLayout:
    if split not in self.splits:
      raise ValueError(
          f'Task {self.name!r} has no split {split!r}; '
          f'available: {sorted(self.splits)}'
      )
    return self.splits[split]

  def file_name(self, split: str) -> str:
    self.layout(split)
    return self.file_names.get(split, f'{split}.tsv')


_STD_TFDS_SPLITS = {'train': 'train', 'dev': 'validation', 'test': 'test'}


def _pair_layouts(labelled: int, test: int, a: int, b: int, label: int):
  """Layouts of train/dev (labelled) and test for a standard pair task."""
  lab = SplitLayout(labelled, True, a, b, label)
  return {'train': lab, 'dev': lab, 'test': SplitLayout(test, True, a, b, None)}


# MNLI: train has 12 fields (label1, gold_label), dev 16 (label1..5,
# gold_label), test 10; sentence1/sentence2 are columns 8/9 everywhere and
# gold_label is always the last column.
_MNLI_SPLITS = {
    'train': SplitLayout(12, True, 8, 9, 11),
    'dev_matched': SplitLayout(16, True, 8, 9, 15),
    'dev_mismatched': SplitLayout(16, True, 8, 9, 15),
    'test_matched': SplitLayout(10, True, 8, 9, None),
    'test_mismatched': SplitLayout(10, True, 8, 9, None),
}
_NLI3 = ('contradiction', 'entailment', 'neutral')
_TFDS_NLI3 = ('entailment', 'neutral', 'contradiction')
_NLI2 = ('entailment', 'not_entailment')

TASKS: Mapping[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            name='cola',
            dir_name='CoLA',
            # train/dev: source, label, original label, sentence (no header).
            splits={
                'train': SplitLayout(4, False, 3, None, 1),
                'dev': SplitLayout(4, False, 3, None, 1),
                'test': SplitLayout(2, True, 1, None, None),
            },
            label_names=('0', '1'),
            is_regression=False,
            metric_names=(MCC,),
            tfds_name='cola',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence', None),
            tfds_label_names=None,
            submission_files={'test': 'CoLA.tsv'},
        ),
        TaskSpec(
            name='sst2',
            dir_name='SST-2',
            splits={
                'train': SplitLayout(2, True, 0, None, 1),
                'dev': SplitLayout(2, True, 0, None, 1),
                'test': SplitLayout(2, True, 1, None, None),
            },
            label_names=('0', '1'),
            is_regression=False,
            metric_names=(ACCURACY,),
            tfds_name='sst2',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence', None),
            tfds_label_names=None,
            submission_files={'test': 'SST-2.tsv'},
        ),
        TaskSpec(
            name='mrpc',
            dir_name='MRPC',
            # Quality, #1 ID, #2 ID, #1 String, #2 String (header has a BOM);
            # test: index, #1 ID, #2 ID, #1 String, #2 String.
            splits=_pair_layouts(5, 5, 3, 4, 0),
            label_names=('0', '1'),
            is_regression=False,
            metric_names=(ACCURACY, F1),
            tfds_name='mrpc',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence1', 'sentence2'),
            tfds_label_names=None,
            submission_files={'test': 'MRPC.tsv'},
        ),
        TaskSpec(
            name='stsb',
            dir_name='STS-B',
            # index, genre, filename, year, old_index, source1, source2,
            # sentence1, sentence2, score (test lacks score).
            splits=_pair_layouts(10, 9, 7, 8, 9),
            label_names=(),
            is_regression=True,
            metric_names=(PEARSON, SPEARMAN),
            tfds_name='stsb',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence1', 'sentence2'),
            tfds_label_names=None,
            submission_files={'test': 'STS-B.tsv'},
        ),
        TaskSpec(
            name='qqp',
            dir_name='QQP',
            # id, qid1, qid2, question1, question2, is_duplicate;
            # test: id, question1, question2.
            splits={
                'train': SplitLayout(6, True, 3, 4, 5),
                'dev': SplitLayout(6, True, 3, 4, 5),
                'test': SplitLayout(3, True, 1, 2, None),
            },
            label_names=('0', '1'),
            is_regression=False,
            metric_names=(ACCURACY, F1),
            tfds_name='qqp',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('question1', 'question2'),
            tfds_label_names=None,
            submission_files={'test': 'QQP.tsv'},
        ),
        TaskSpec(
            name='mnli',
            dir_name='MNLI',
            splits=_MNLI_SPLITS,
            label_names=_NLI3,
            is_regression=False,
            metric_names=(ACCURACY,),
            tfds_name='mnli',
            tfds_splits={
                'train': 'train',
                'dev_matched': 'validation_matched',
                'dev_mismatched': 'validation_mismatched',
                'test_matched': 'test_matched',
                'test_mismatched': 'test_mismatched',
            },
            tfds_text=('premise', 'hypothesis'),
            tfds_label_names=_TFDS_NLI3,
            submission_files={
                'test_matched': 'MNLI-m.tsv',
                'test_mismatched': 'MNLI-mm.tsv',
            },
        ),
        TaskSpec(
            name='qnli',
            dir_name='QNLI',
            # index, question, sentence, label; test: index, question, sentence.
            splits=_pair_layouts(4, 3, 1, 2, 3),
            label_names=_NLI2,
            is_regression=False,
            metric_names=(ACCURACY,),
            tfds_name='qnli',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('question', 'sentence'),
            tfds_label_names=_NLI2,
            submission_files={'test': 'QNLI.tsv'},
        ),
        TaskSpec(
            name='rte',
            dir_name='RTE',
            # index, sentence1, sentence2, label.
            splits=_pair_layouts(4, 3, 1, 2, 3),
            label_names=_NLI2,
            is_regression=False,
            metric_names=(ACCURACY,),
            tfds_name='rte',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence1', 'sentence2'),
            tfds_label_names=_NLI2,
            submission_files={'test': 'RTE.tsv'},
        ),
        TaskSpec(
            name='wnli',
            dir_name='WNLI',
            # index, sentence1, sentence2, label (0/1; 1 = entailment).
            splits=_pair_layouts(4, 3, 1, 2, 3),
            label_names=('0', '1'),
            is_regression=False,
            metric_names=(ACCURACY,),
            tfds_name='wnli',
            tfds_splits=_STD_TFDS_SPLITS,
            tfds_text=('sentence1', 'sentence2'),
            # tfds names the classes but keeps 0/1 as indices: no remapping.
            tfds_label_names=None,
            submission_files={'test': 'WNLI.tsv'},
        ),
        TaskSpec(
            name='ax',
            dir_name='diagnostic',
            # The diagnostic set: index, sentence1, sentence2; predicted with
            # an MNLI model, so it shares MNLI's label names.
            splits={'test': SplitLayout(3, True, 1, 2, None)},
            label_names=_NLI3,
            is_regression=False,
            metric_names=(),
            tfds_name='ax',
            tfds_splits={'test': 'test'},
            tfds_text=('premise', 'hypothesis'),
            tfds_label_names=_TFDS_NLI3,
            submission_files={'test': 'AX.tsv'},
            file_names={'test': 'diagnostic.tsv'},
        ),
    ]
}


def get_task(task: str) -> TaskSpec:
  """Returns the spec of `task` (case-insensitive; `sst-2`, `sts-b` work)."""
  key = task.lower().replace('-', '')
  if key not in TASKS:
    raise ValueError(f'Unknown GLUE task {task!r}; known: {sorted(TASKS)}')
  return TASKS[key]
