"""Text that is not UTF-8 is refused with its file, line and byte."""

import os
import re

import pytest

from codir_jax import data
from codir_jax.data import pretrain_text
from codir_jax.data import utf8
from tests.data import pretrain_corpus as corpus


def _tokenizer():
  """A WordLevel fast tokenizer with BERT's specials and a mask token."""
  return corpus.word_level(
      ['hello', 'world', 'foo', 'bar', 'caf'],
      pad_token='[PAD]',
      unk_token='[UNK]',
      cls_token='[CLS]',
      sep_token='[SEP]',
      mask_token='[MASK]',
  )


def _write_bytes(path, content: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(content)
  return str(path)


def _located(path, line, column):
  """The message prefix and position `utf8.not_utf8` promises."""
  return (
      re.escape(f'{path}:{line}: not valid UTF-8')
      + '.*'
      + re.escape(f'at byte {column} of the line')
      + '.*UTF-8'
  )


@pytest.mark.parametrize(
    'bom,newline', [(b'', b'\n'), (b'\xef\xbb\xbf', b'\r\n')]
)
def test_glue_tsv_names_file_and_line(tmp_path, bom, newline):
  rows = [
      b'sentence\tlabel',
      b'a fine film\t1',
      b'dull\t0',
      b'caf\xe9 au lait\t1',
      b'ok\t0',
  ]
  path = _write_bytes(
      tmp_path / 'SST-2' / 'train.tsv', bom + newline.join(rows) + newline
  )
  with pytest.raises(ValueError, match=_located(path, 4, 4)) as e:
    data.load_split('sst2', 'train', data_dir=tmp_path)
  assert isinstance(e.value.__cause__, UnicodeDecodeError)
  assert 're-save the file as UTF-8' in str(e.value)


def test_glue_tsv_valid_utf8_and_bom_still_read(tmp_path):
  rows = ['sentence\tlabel', 'café “quoted” \r inside\t1', 'ok\t0']
  _write_bytes(
      tmp_path / 'SST-2' / 'train.tsv',
      b'\xef\xbb\xbf' + '\n'.join(rows).encode() + b'\n',
  )
  split = data.load_split('sst2', 'train', data_dir=tmp_path)
  assert split.text_a == ['café “quoted” \r inside', 'ok']


def test_corpus_names_file_and_line_before_any_batch(tmp_path):
  """The second file's line 40 is bad: found at construction, far past the
  first chunk the constructor tokenises."""
  good = _write_bytes(tmp_path / 'a.txt', b'hello world\n' * 100)
  lines = [b'foo bar caf\xc3\xa9'] * 39 + [b'foo \xff bar'] + [b'world'] * 9
  bad = _write_bytes(tmp_path / 'b.txt', b'\n'.join(lines) + b'\n')
  with pytest.raises(ValueError, match=_located(bad, 40, 5)) as e:
    pretrain_text.PretrainIterator(
        [good, bad], _tokenizer(), batch_size=2, max_len=16, chunk_bytes=64
    )
  assert isinstance(e.value.__cause__, UnicodeDecodeError)


def test_corpus_changed_after_the_check_names_file_and_line(tmp_path):
  path = _write_bytes(tmp_path / 'c.txt', b'hello world\n' * 20)
  it = pretrain_text.PretrainIterator(
      path, _tokenizer(), batch_size=2, max_len=16, num_epochs=1, chunk_bytes=64
  )
  with open(path, 'r+b') as f:  # same size, line 15 broken
    f.seek(14 * 12 + 6)
    f.write(b'\x80')
  with pytest.raises(ValueError, match=_located(path, 15, 7)):
    list(it)


@pytest.mark.parametrize('chunk_bytes', [1, 2, 3, 5, 7, 64])
def test_check_file_across_chunk_boundaries(tmp_path, chunk_bytes):
  """Characters split between chunks are fine; the bad byte is located."""
  text = 'é€😀 abc\nxyz ü\n'.encode()
  path = _write_bytes(tmp_path / 'ok.txt', text * 5)
  utf8.check_file(path, chunk_bytes)  # no error
  bad = _write_bytes(
      tmp_path / 'bad.txt', text * 3 + b'xyz \xe2\x82 ok\n' + text
  )
  with pytest.raises(ValueError, match=_located(bad, 7, 5)):
    utf8.check_file(bad, chunk_bytes)


def test_truncated_last_character_is_located(tmp_path):
  path = _write_bytes(tmp_path / 't.txt', b'hello\nworld \xe2\x82')
  with pytest.raises(ValueError, match=_located(path, 2, 7)):
    utf8.check_file(path)
