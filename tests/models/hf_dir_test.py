"""A bad model or tokenizer directory is refused with the file at fault.

Each case starts from a tiny saved teacher (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json) and breaks one thing.
"""

import json
import os
import pathlib
import re

import pytest

from codir_jax.models import from_pretrained
from codir_jax.models import load_tokenizer
from tests.train import assets

_FIX = "re-export or re-download it"


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp("hf") / "teacher"
  assets.make_teacher_dir(str(path))
  return path


@pytest.fixture
def copy(teacher, tmp_path) -> pathlib.Path:
  """A fresh copy of the teacher directory to break."""
  path = tmp_path / "copy"
  path.mkdir()
  for f in teacher.iterdir():
    (path / f.name).write_bytes(f.read_bytes())
  return path


def _raises(exc, *parts: str):
  """pytest.raises whose message must contain `parts`, in order."""
  return pytest.raises(exc, match=".*".join(map(re.escape, parts)))


def test_directory_of_random_files(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "data.bin").write_bytes(os.urandom(64))
  with _raises(
      FileNotFoundError,
      f"{tmp_path} is not a Hugging Face" " tokenizer directory",
      "tokenizer.json",
      "vocab.txt",
      "it holds data.bin, notes.txt",
  ):
    load_tokenizer(tmp_path)
  with _raises(
      FileNotFoundError,
      str(tmp_path / "config.json"),
      "not a Hugging Face model directory",
      "data.bin, notes.txt",
  ):
    from_pretrained(tmp_path)


def test_empty_directory_and_a_file(tmp_path):
  with _raises(FileNotFoundError, f"{tmp_path} is not", "it is empty"):
    load_tokenizer(tmp_path)
  (tmp_path / "f").write_text("x")
  with _raises(FileNotFoundError, f"{tmp_path / 'f'} is a file"):
    from_pretrained(tmp_path / "f")
  with _raises(FileNotFoundError, f"{tmp_path / 'f'} is a file"):
    load_tokenizer(tmp_path / "f")


def test_config_without_weights_or_tokenizer(copy):
  """Without tokenizer files transformers silently builds a tokenizer of
  the five special tokens from config.json alone."""
  for name in ("model.safetensors", "tokenizer.json"):
    (copy / name).unlink()
  with _raises(
      FileNotFoundError,
      f"No weights in {copy}",
      "it holds config.json, tokenizer_config.json",
  ):
    from_pretrained(copy)
  with _raises(
      FileNotFoundError,
      f"{copy} is not a Hugging Face tokenizer",
      "vocab.txt (BERT)",
      "config.json, tokenizer_config.json",
  ):
    load_tokenizer(copy)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 100, b"garbage" * 50, "truncated"],
    ids=["empty", "zeros", "garbage", "truncated"],
)
def test_corrupt_safetensors(copy, content):
  file = copy / "model.safetensors"
  if content == "truncated":
    content = file.read_bytes()[:-100]
  file.write_bytes(content)
  with _raises(
      ValueError, f"{file}: not a readable safetensors file", _FIX
  ) as e:
    from_pretrained(copy, head="classification")
  assert type(e.value.__cause__).__name__ == "SafetensorError"


def test_corrupt_shard_index_and_shard(copy):
  (copy / "model.safetensors").rename(copy / "shard-1.safetensors")
  index = copy / "model.safetensors.index.json"
  index.write_text('{"weight_map": {"a": "shard-1.safetensors",')
  with _raises(ValueError, f"{index}: invalid JSON at line 1 column 44"):
    from_pretrained(copy)
  index.write_text('{"metadata": {}}')
  with _raises(ValueError, f"{index}: no 'weight_map'"):
    from_pretrained(copy)
  index.write_text(
      json.dumps(
          {
              "weight_map": {
                  "a": "shard-1.safetensors",
                  "b": "shard-2.safetensors",
              }
          }
      )
  )
  with _raises(
      FileNotFoundError, str(copy / "shard-2.safetensors"), f"listed in {index}"
  ):
    from_pretrained(copy)
  (copy / "shard-2.safetensors").write_bytes(b"\x01")
  with _raises(
      ValueError,
      f"{copy / 'shard-2.safetensors'}: not a" " readable safetensors",
  ):
    from_pretrained(copy)


def test_corrupt_pytorch_bin(copy):
  pytest.importorskip("torch")
  (copy / "model.safetensors").unlink()
  for content in (b"", b"not a pickle" * 10):
    (copy / "pytorch_model.bin").write_bytes(content)
    with _raises(
        ValueError,
        f"{copy / 'pytorch_model.bin'}: not a readable" " torch checkpoint",
    ):
      from_pretrained(copy)


@pytest.mark.parametrize(
    "text,where",
    [
        ('{"model_type": "bert",\n  oops}', "line 2 column 3"),
        ('{"model_type": "bert", "hidden_size": 3', "line 1 column 40"),
        ("", "line 1 column 1"),
    ],
    ids=["syntax", "truncated", "empty"],
)
def test_corrupt_config_json(copy, text, where):
  file = copy / "config.json"
  file.write_text(text)
  for load in (from_pretrained, load_tokenizer):
    with _raises(ValueError, f"{file}: invalid JSON at {where}", _FIX) as e:
      load(copy)
    assert type(e.value.__cause__).__name__ == "JSONDecodeError"


def test_config_json_not_an_object_or_not_utf8(copy):
  file = copy / "config.json"
  file.write_text("[1, 2]")
  with _raises(ValueError, f"{file}: expected a JSON object, got list"):
    from_pretrained(copy)
  file.write_bytes(b'{"model_type": "b\xe9rt"}')
  with _raises(ValueError, f"{file}: not UTF-8 text (byte 0xe9"):
    from_pretrained(copy)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json"])
def test_corrupt_tokenizer_json(copy, name):
  file = copy / name
  file.write_bytes(file.read_bytes()[:50])
  with _raises(ValueError, f"{file}: invalid JSON at line"):
    load_tokenizer(copy)


def test_tokenizer_json_of_another_schema(copy):
  (copy / "tokenizer.json").write_text('{"version": "1.0", "model": {}}')
  with _raises(ValueError, f"{copy}: cannot load the tokenizer", _FIX) as e:
    load_tokenizer(copy)
  assert e.value.__cause__ is not None


def test_empty_vocab_txt(copy):
  """A BERT tokenizer dir whose only vocabulary is an empty vocab.txt."""
  (copy / "tokenizer.json").unlink()
  (copy / "tokenizer_config.json").write_text(
      '{"tokenizer_class": "BertTokenizer"}'
  )
  (copy / "vocab.txt").write_text("")
  with _raises(ValueError, f"{copy}: the tokenizer holds only its"):
    load_tokenizer(copy)
  (copy / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
  with _raises(ValueError, f"{copy}: the tokenizer holds only its 5 special"):
    load_tokenizer(copy)


def test_valid_directory_still_loads(copy):
  tok = load_tokenizer(copy)
  assert len(tok) > 50 and tok("a good film")["input_ids"][0] == 2  # [CLS]
  assert from_pretrained(copy, head="classification").num_labels == 2
