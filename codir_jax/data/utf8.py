"""UTF-8 checks of text files whose errors name the file, line and byte.

`glue.py` decodes a whole TSV at once and `pretrain_text.py` scans corpus
files before streaming them; both report a byte that is not UTF-8 as
`ValueError('<path>:<line>: not valid UTF-8 ...')`, with a 1-based line
(lines end at '\\n') and the byte's 1-based position in that line.
"""

import codecs
import os

_CHUNK = 1 << 20


def not_utf8(path: str | os.PathLike[str], offset: int) -> ValueError:
  """The error for the invalid byte at byte `offset` of `path`.

  Re-reads the file up to `offset` to count lines, so it costs one read of
  that prefix, and only when there is an error to report.

  Args:
    path: the text file.
    offset: 0-based file offset of the first byte that does not decode.

  Returns:
    A ValueError to raise (chain it `from` the UnicodeDecodeError).
  """
  line_no, line_start, done = 1, 0, 0
  with open(path, 'rb') as f:
    while done < offset:
      chunk = f.read(min(_CHUNK, offset - done))
      if not chunk:
        break
      newlines = chunk.count(b'\n')
      if newlines:
        line_no += newlines
        line_start = done + chunk.rfind(b'\n') + 1
      done += len(chunk)
    byte = f.read(1)
  shown = f'byte 0x{byte[0]:02x}' if byte else 'a truncated character'
  return ValueError(
      f'{os.fspath(path)}:{line_no}: not valid UTF-8 ({shown} at byte'
      f' {offset - line_start + 1} of the line): re-save the file as UTF-8,'
      ' e.g. `iconv -f latin1 -t utf-8 in > out`'
  )


def check_file(path: str | os.PathLike[str], chunk_bytes: int = _CHUNK) -> None:
  """Raises `not_utf8` at the first byte of `path` that is not UTF-8.

  Streams the file `chunk_bytes` at a time (memory does not grow with it).
  """
  decoder = codecs.getincrementaldecoder('utf-8')()
  offset = 0  # file offset of the next chunk
  with open(path, 'rb') as f:
    while True:
      chunk = f.read(chunk_bytes)
      pending = len(decoder.getstate()[0])  # bytes of a split character
      try:
        decoder.decode(chunk, final=not chunk)
      except UnicodeDecodeError as e:
        raise not_utf8(path, offset - pending + e.start) from e
      if not chunk:
        return
      offset += len(chunk)
