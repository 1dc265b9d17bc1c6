"""Reading raw text files as a resumable stream of token ids (CoDIR-Pre).

Reading. Files (paths or globs, each glob expanded in sorted order) must be
UTF-8: the constructor scans them once, streaming, and a byte that is not
UTF-8 is a ValueError naming the file and the line. They are then read
lazily with `readline(chunk_bytes)`: one document per line
(`doc_format='line'`) or documents separated by blank lines
(`'blank_line'`; the lines of a document are joined by a space, and the end
of a file ends a document). Empty lines never make a document. A line
longer than `chunk_bytes` is cut before its last space or tab (or, with none,
at a character boundary) and continued by the next read, so no read holds
more than `chunk_bytes` of text. Segments are tokenised `chunk_bytes` at a
time with the Rust backend of a fast tokenizer (`encode_batch_fast`, no
special tokens), and at most one tokenised chunk is buffered: memory does not
grow with the corpus.

Several processes (`SegmentEncoder`). Process p of P tokenises segments
p, p + P, p + 2P, ... of each chunk, and `exchange`, an all-gather, hands it
the other processes' ids: every process ends with the ids of every segment,
as if it had tokenised them all, having tokenised 1/P of them. Every process
still reads every byte (segment boundaries and the parser's flags come from
one sequential scan, cheap next to tokenisation).
"""

import collections
import glob
import os
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import tokenizers

from codir_jax.data import utf8

DOC_FORMATS = ('line', 'blank_line')
MIN_CHUNK_BYTES = 64
DEFAULT_CHUNK_BYTES = 1 << 20
_MAX_CHUNK_SEGMENTS = 8192
# This process's token arrays -> every process's arrays, in process order.
Exchange = Callable[[list[np.ndarray]], Sequence[Sequence[np.ndarray]]]


class StreamPosition(NamedTuple):
  """Where to resume reading: before a segment, with the parser's flags.

  Attributes:
    file: index into the file list (== len(files) at the end of an epoch).
    offset: byte offset in that file.
    in_doc: a document is open (the next text continues it).
    mid_line: the next read continues a line cut at `chunk_bytes`.
    seen_doc: a document was already emitted this epoch (so the next one is
      preceded by a separator).
  """

  file: int = 0
  offset: int = 0
  in_doc: bool = False
  mid_line: bool = False
  seen_doc: bool = False


def resolve_files(paths: str | os.PathLike[str] | Sequence[Any]) -> list[str]:
  """Expands paths and globs (each glob sorted); raises on a missing one."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  files = []
  for path in map(os.fspath, paths):
    if os.path.isfile(path):
      files.append(path)
    elif any(c in path for c in '*?['):
      matches = sorted(p for p in glob.glob(path) if os.path.isfile(p))
      if not matches:
        raise FileNotFoundError(f'No text file matches {path!r}')
      files.extend(matches)
    else:
      raise FileNotFoundError(f'Text file not found: {path!r}')
  if not files:
    raise ValueError('No text files given')
  return files


def _cut(raw: bytes) -> int:
  """Where to cut an over-long line: before its last blank, else a char."""
  k = max(raw.rfind(b' '), raw.rfind(b'\t'))
  if k > 0:
    return k
  k = len(raw) - 1
  while k > 0 and raw[k] & 0xC0 == 0x80:  # UTF-8 continuation byte
    k -= 1
  return k if k > 0 else len(raw)


class TextReader:
  """Yields non-empty text segments lazily, one `readline` at a time."""

  def __init__(self, files: Sequence[str], doc_format: str, chunk_bytes: int):
    self._files = files
    self._blank_line = doc_format == 'blank_line'
    self._chunk_bytes = chunk_bytes
    self._file = None
    self.pos = StreamPosition()

  def seek(self, pos: StreamPosition) -> None:
    self.close()
    self.pos = pos

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def read(self) -> tuple[StreamPosition, str, bool] | None:
    """(position before it, text, starts a document), or None at the end."""
    while self.pos.file < len(self._files):
      start = self.pos
      if self._file is None:
        self._file = open(self._files[start.file], 'rb')
        self._file.seek(start.offset)
      raw = self._file.readline(self._chunk_bytes)
      if not raw:  # end of file: it closes any open document
        self.close()
        self.pos = StreamPosition(start.file + 1, seen_doc=start.seen_doc)
        continue
      complete = raw.endswith(b'\n') or len(raw) < self._chunk_bytes
      if not complete:
        raw = raw[: _cut(raw)]
        self._file.seek(start.offset + len(raw))
      try:
        text = raw.decode('utf-8')
      except UnicodeDecodeError as e:  # the file changed after the check
        path = self._files[start.file]
        raise utf8.not_utf8(path, start.offset + e.start) from e
      if not start.mid_line:
        text = text.lstrip()
      if complete:
        text = text.rstrip()
      if complete and (not self._blank_line or not (text or start.mid_line)):
        in_doc = bool(text) and self._blank_line
      else:
        in_doc = start.in_doc or bool(text)
      self.pos = StreamPosition(
          start.file,
          start.offset + len(raw),
          in_doc,
          not complete,
          start.seen_doc or bool(text),
      )
      if text:
        if start.in_doc and not start.mid_line:
          text = ' ' + text  # next line of a blank_line document
        return start, text, not start.in_doc
    return None


class SegmentEncoder:
  """Token ids of text segments; with several processes each encodes a share.

  Called with the segments of a chunk (the same on every process), process
  `process_index` encodes segments `process_index::process_count` and
  `exchange` returns every process's ids. Without `exchange`, or with one
  process, it encodes them all.
  """

  def __init__(
      self,
      backend: tokenizers.Tokenizer,
      *,
      process_index: int = 0,
      process_count: int = 1,
      exchange: Exchange | None = None,
  ):
    self._encode = getattr(backend, 'encode_batch_fast', backend.encode_batch)
    if exchange is None:
      process_index, process_count = 0, 1
    self._index, self._count = process_index, process_count
    self._exchange = exchange

  def __call__(self, texts: Sequence[str]) -> list[np.ndarray]:
    """[len(texts)] int32 id arrays, no special tokens."""
    n = self._count
    mine = list(texts[self._index :: n])
    encodings = self._encode(mine, add_special_tokens=False) if mine else []
    ids = [np.asarray(e.ids, np.int32) for e in encodings]
    if n == 1:
      return ids
    shares = self._exchange(ids)
    if len(shares) != n:
      raise ValueError(f'exchange returned {len(shares)} shares for {n}')
    out = [None] * len(texts)
    for q, share in enumerate(shares):
      want = len(range(q, len(texts), n))
      if len(share) != want:
        raise ValueError(
            f'process {q} sent {len(share)} token arrays for {want} segments'
        )
      out[q::n] = share
    return out


class TokenStream:
  """The token stream of an epoch (documents and separators), via `take`."""

  def __init__(
      self,
      reader: TextReader,
      encode: Callable[[list[str]], list[np.ndarray]],
      *,
      sep_id: int,
      chunk_bytes: int,
  ):
    self._reader = reader
    self._encode = encode
    self._sep = np.asarray([sep_id], np.int32)
    self._chunk_bytes = chunk_bytes
    self._pending = collections.deque()  # (StreamPosition, ids [n] int32)
    self._cursor = 0  # tokens of pending[0] already consumed
    self.max_pending_tokens = 0  # high-water mark, for tests

  def seek(self, pos: StreamPosition, skip: int = 0) -> None:
    self._reader.seek(pos)
    self._pending.clear()
    self._cursor = skip

  def close(self) -> None:
    self._reader.close()

  def position(self) -> tuple[StreamPosition, int]:
    """(segment position, tokens to skip) of the next token."""
    if self._pending:
      return self._pending[0][0], self._cursor
    return self._reader.pos, self._cursor

  def _fill(self) -> bool:
    """Reads and tokenises one chunk; False at the end of the corpus."""
    while not self._pending:
      segments, size = [], 0
      while size < self._chunk_bytes and len(segments) < _MAX_CHUNK_SEGMENTS:
        segment = self._reader.read()
        if segment is None:
          break
        segments.append(segment)
        size += len(segment[1])
      if not segments:
        return False
      encoded = self._encode([s[1] for s in segments])
      for (pos, _, starts_doc), ids in zip(segments, encoded, strict=True):
        if starts_doc and pos.seen_doc:
          ids = np.concatenate([self._sep, ids])
        if len(ids):
          self._pending.append((pos, ids))
      total = sum(len(ids) for _, ids in self._pending)
      self.max_pending_tokens = max(self.max_pending_tokens, total)
    if self._cursor >= len(self._pending[0][1]):
      raise ValueError(
          f'Bad iterator state: skip {self._cursor} >= segment length'
          f' {len(self._pending[0][1])} at {self._pending[0][0]}'
      )
    return True

  def take(self, n: int) -> np.ndarray | None:
    """Up to `n` next tokens ([k] int32), or None when the epoch is over."""
    parts = []
    while n > 0 and (self._pending or self._fill()):
      ids = self._pending[0][1]
      k = min(n, len(ids) - self._cursor)
      parts.append(ids[self._cursor : self._cursor + k])
      self._cursor += k
      n -= k
      if self._cursor == len(ids):
        self._pending.popleft()
        self._cursor = 0
    return np.concatenate(parts) if parts else None
