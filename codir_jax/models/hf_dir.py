"""What is wrong with a local Hugging Face directory, naming the file.

`hf_io.py` calls these before handing files to safetensors, torch or
transformers, whose own errors often omit the file (`SafetensorError:
header too large`) or blame something else (a directory without tokenizer
files gives a sentencepiece hint, or silently a tokenizer of special tokens
only). Each check raises `FileNotFoundError` (a missing directory or file,
with what the directory holds instead) or `ValueError` (an unreadable file,
with the JSON line and column where there is one); the message starts with
the path.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

# transformers builds a BERT/RoBERTa tokenizer from any one of these groups.
TOKENIZER_FILES = (
    ("tokenizer.json",),
    ("vocab.txt",),
    ("vocab.json", "merges.txt"),
)
# JSON files a tokenizer load reads when they are present.
_TOKENIZER_JSON = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
)
_FIX = "re-export or re-download it"
_LISTED = 8


def listing(path: pathlib.Path) -> str:
  """'it holds a, b' or 'it is empty' (at most 8 names), for messages."""
  names = sorted(p.name for p in path.iterdir())
  if not names:
    return "it is empty"
  more = len(names) - _LISTED
  tail = f" and {more} more" if more > 0 else ""
  return f"it holds {', '.join(names[:_LISTED])}{tail}"


def require_dir(path: str | os.PathLike[str], what: str) -> pathlib.Path:
  """`path` as a Path; raises FileNotFoundError unless it is a directory."""
  path = pathlib.Path(path)
  if path.is_dir():
    return path
  if path.exists():
    raise FileNotFoundError(
        f"{what} {path} is a file, not a Hugging Face directory."
    )
  raise FileNotFoundError(f"{what} {path} does not exist.")


def read_json(path: pathlib.Path) -> Any:
  """Parses a JSON file; ValueError naming it, the line and the column."""
  try:
    return json.loads(path.read_bytes().decode("utf-8"))
  except UnicodeDecodeError as e:
    raise ValueError(
        f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset"
        f" {e.start}), so not JSON; the file is corrupt: {_FIX}."
    ) from e
  except json.JSONDecodeError as e:
    raise ValueError(
        f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg};"
        f" the file is corrupt or truncated: {_FIX}."
    ) from e


def read_json_object(path: pathlib.Path) -> dict[str, Any]:
  """`read_json` of a file that must hold a JSON object."""
  value = read_json(path)
  if not isinstance(value, dict):
    raise ValueError(
        f"{path}: expected a JSON object, got {type(value).__name__}: {_FIX}."
    )
  return value


def load_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Every tensor of one .safetensors file; ValueError naming a bad file."""
  try:
    return safetensors.numpy.load_file(path)
  except safetensors.SafetensorError as e:
    raise ValueError(
        f"{path}: not a readable safetensors file ({e}); it is truncated or"
        f" corrupt: {_FIX}."
    ) from e


def check_tokenizer_dir(path: str | os.PathLike[str]) -> pathlib.Path:
  """Checks that `path` holds tokenizer files and that its JSON parses.

  Args:
    path: a local Hugging Face directory.

  Returns:
    `path` as a Path.

  Raises:
    FileNotFoundError: `path` is not a directory, or holds none of
      tokenizer.json, vocab.txt or vocab.json + merges.txt (without them
      transformers builds a tokenizer of special tokens only).
    ValueError: one of its JSON files does not parse.
  """
  path = require_dir(path, "Tokenizer directory")
  if not any(
      all((path / f).is_file() for f in group) for group in TOKENIZER_FILES
  ):
    raise FileNotFoundError(
        f"{path} is not a Hugging Face tokenizer directory: it needs"
        " tokenizer.json, vocab.txt (BERT) or vocab.json + merges.txt"
        f" (RoBERTa), but {listing(path)}."
    )
  for name in _TOKENIZER_JSON:
    if (path / name).is_file():
      read_json(path / name)
  return path
