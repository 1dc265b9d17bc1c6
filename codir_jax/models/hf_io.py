"""Import and export Hugging Face BERT/RoBERTa checkpoints (offline only).

A HF directory holds `config.json` and `model.safetensors` (or a sharded
`model.safetensors.index.json`, or a legacy `pytorch_model.bin`, read with
torch only when it is the sole weights file). Encoder tensors may carry the
`bert.` / `roberta.` prefix or none; torch Linear weights are [out, in] and
are transposed to Flax's [in, out].

`save_pretrained` writes files that `transformers.AutoModel`,
`AutoModelForSequenceClassification` and `AutoModelForMaskedLM` load with no
missing or unexpected keys. An `Encoder` without a pooler loads into
`AutoModel.from_pretrained(path, add_pooling_layer=False)`.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import pickle
import shutil
import tempfile
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from codir_jax.models import hf_dir
from codir_jax.models.encoder import Encoder
from codir_jax.models.encoder import EncoderConfig
from codir_jax.models.heads import MaskedLM
from codir_jax.models.heads import SequenceClassifier

Model = Encoder | SequenceClassifier | MaskedLM
HEADS = ("base", "classification", "masked_lm")
_SAFETENSORS = "model.safetensors"
_INDEX = "model.safetensors.index.json"
_TORCH_BIN = "pytorch_model.bin"
# Non-parameter buffers some checkpoints carry; never loaded.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_LEAF = {
    "kernel": "weight",
    "embedding": "weight",
    "scale": "weight",
    "bias": "bias",
}
_LAYER_SUB = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attention_output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}
_HEAD_SUB = {  # (model_type, our module) -> HF module
    ("bert", "out_proj"): "classifier",
    ("roberta", "out_proj"): "classifier.out_proj",
    ("roberta", "dense"): "classifier.dense",
    ("bert", "transform"): "cls.predictions.transform.dense",
    ("bert", "transform_norm"): "cls.predictions.transform.LayerNorm",
    ("bert", "bias"): "cls.predictions.bias",
    ("roberta", "transform"): "lm_head.dense",
    ("roberta", "transform_norm"): "lm_head.layer_norm",
    ("roberta", "bias"): "lm_head.bias",
}
_ARCHITECTURES = {
    ("bert", "base"): "BertModel",
    ("roberta", "base"): "RobertaModel",
    ("bert", "classification"): "BertForSequenceClassification",
    ("roberta", "classification"): "RobertaForSequenceClassification",
    ("bert", "masked_lm"): "BertForMaskedLM",
    ("roberta", "masked_lm"): "RobertaForMaskedLM",
}


def _head_of(model: Model) -> str:
  if isinstance(model, SequenceClassifier):
    return "classification"
  if isinstance(model, MaskedLM):
    return "masked_lm"
  if isinstance(model, Encoder):
    return "base"
  raise TypeError(f"Not a codir_jax model: {type(model).__name__}.")


def _encoder_name(path: tuple[Any, ...]) -> str:
  """Encoder-relative param path -> HF name without model prefix."""
  leaf = _LEAF[path[-1]]
  if path[0] == "embeddings":
    module = "LayerNorm" if path[1] == "layer_norm" else path[1]
    return f"embeddings.{module}.{leaf}"
  if path[0] == "layers":
    return f"encoder.layer.{path[1]}.{_LAYER_SUB[path[2]]}.{leaf}"
  if path[0] == "pooler":
    return f"pooler.dense.{leaf}"
  raise KeyError(path)


def _hf_names(model: Model) -> dict[tuple[Any, ...], tuple[str, bool]]:
  """Maps each param path to (HF name, is encoder tensor)."""
  head = _head_of(model)
  mt = model.config.model_type
  prefix = "" if head == "base" else f"{mt}."
  names = {}
  for path in _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))):
    if head == "base":
      names[path] = (_encoder_name(path), True)
    elif path[0] == "encoder":
      # The BERT pooler belongs to the classification head's inputs: a
      # masked-LM checkpoint has none, and (as in transformers) it is then
      # initialised like the head rather than refused.
      names[path] = (prefix + _encoder_name(path[1:]), path[1] != "pooler")
    elif path == ("bias",):
      names[path] = (_HEAD_SUB[(mt, "bias")], False)
    else:
      hf = _HEAD_SUB[(mt, path[0])]
      names[path] = (f"{hf}.{_LEAF[path[-1]]}", False)
  return names


def _flatten(tree: dict[Any, Any], prefix: tuple[Any, ...] = ()):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def _unflatten(flat: dict[tuple[Any, ...], Any]) -> dict[Any, Any]:
  tree: dict[Any, Any] = {}
  for path, value in flat.items():
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def _read_tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  """Reads every tensor of a HF directory as numpy arrays."""
  if (path / _SAFETENSORS).is_file():
    return hf_dir.load_safetensors(path / _SAFETENSORS)
  if (path / _INDEX).is_file():
    weight_map = hf_dir.read_json_object(path / _INDEX).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{path / _INDEX}: no 'weight_map' object.")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
      if not (path / shard).is_file():
        raise FileNotFoundError(
            f"Missing shard {path / shard} (listed in {path / _INDEX})."
        )
      tensors.update(hf_dir.load_safetensors(path / shard))
    return tensors
  if (path / _TORCH_BIN).is_file():
    import torch  # pylint: disable=g-import-not-at-top  # Optional dep.

    try:
      state = torch.load(
          path / _TORCH_BIN, map_location="cpu", weights_only=True
      )
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
      why = (str(e).splitlines() or [""])[0]
      raise ValueError(
          f"{path / _TORCH_BIN}: not a readable torch checkpoint"
          f" ({type(e).__name__}: {why}); re-export or re-download it."
      ) from e
    return {
        k: (v.float() if v.is_floating_point() else v).numpy()
        for k, v in state.items()
    }
  raise FileNotFoundError(
      f"No weights in {path}: expected {_SAFETENSORS}, {_INDEX} or "
      f"{_TORCH_BIN}, but {hf_dir.listing(path)}."
  )


def _read_config(path: pathlib.Path) -> dict[str, Any]:
  path = hf_dir.require_dir(path, "Model directory")
  if not (path / "config.json").is_file():
    raise FileNotFoundError(
        f"Missing {path / 'config.json'}: {path} is not a Hugging Face model"
        f" directory ({hf_dir.listing(path)})."
    )
  return hf_dir.read_json_object(path / "config.json")


def _build(
    config: EncoderConfig,
    head: str,
    num_labels: int | None,
    rngs: nnx.Rngs,
    add_pooler: bool = False,
) -> Model:
  if head == "base":
    return Encoder(config, rngs=rngs, add_pooler=add_pooler)
  if head == "classification":
    return SequenceClassifier(config, num_labels, rngs=rngs)
  if head == "masked_lm":
    return MaskedLM(config, rngs=rngs)
  raise ValueError(f"Unknown head {head!r}; expected one of {HEADS}.")


def from_pretrained(
    path: str | os.PathLike[str],
    *,
    head: str = "base",
    num_labels: int | None = None,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
    seed: int = 0,
) -> Model:
  """Loads a local HF BERT/RoBERTa directory into a codir_jax model.

  Args:
    path: directory with config.json and weights.
    head: 'base' (Encoder, with the pooler if the checkpoint has one),
      'classification' (SequenceClassifier) or 'masked_lm' (MaskedLM).
    num_labels: classes of the classification head (1 = regression); default
      from config.json (`num_labels` or `id2label`), else 2.
    dtype: computation dtype.
    param_dtype: parameter dtype (tensors are cast to it).
    seed: initialises head parameters missing from the checkpoint (e.g. a
      classifier on a pre-trained encoder); a warning lists them.

  Returns:
    The model, in float32 logits / `dtype` activations.

  Raises:
    FileNotFoundError: missing directory, config.json or weights.
    ValueError: a corrupt config.json or weights file (the message names
      it), unsupported model_type/head, missing encoder tensors, or a
      tensor whose shape differs from the model's.
  """
  if head not in HEADS:
    raise ValueError(f"Unknown head {head!r}; expected one of {HEADS}.")
  path = pathlib.Path(path)
  hf = _read_config(path)
  try:
    config = EncoderConfig.from_hf(hf, dtype=dtype, param_dtype=param_dtype)
  except ValueError as e:
    raise ValueError(f"{path / 'config.json'}: {e}") from None
  if head == "classification" and num_labels is None:
    num_labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
  tensors = _read_tensors(path)
  prefix = f"{config.model_type}."
  file_names = {k.removeprefix(prefix): k for k in tensors}
  tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
  for name in _HEAD_SUB.values():  # Older HF files name the bias twice.
    alias = name.replace(".bias", ".decoder.bias")
    if name.endswith(".bias") and name not in tensors and alias in tensors:
      tensors[name] = tensors[alias]
  add_pooler = head == "base" and "pooler.dense.weight" in tensors
  model = _build(config, head, num_labels, nnx.Rngs(seed), add_pooler)
  params = _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  missing_head, missing, used = [], [], set()
  for p, (name, is_encoder) in _hf_names(model).items():
    key = name.removeprefix(prefix)  # Head names carry no model prefix.
    if key not in tensors:
      (missing if is_encoder else missing_head).append(name)
      continue
    used.add(key)
    value = tensors[key].T if p[-1] == "kernel" else tensors[key]
    if value.shape != params[p].shape:
      want = params[p].shape[::-1] if p[-1] == "kernel" else params[p].shape
      raise ValueError(
          f"{path}: tensor {file_names.get(key, key)!r} has shape "
          f"{tuple(tensors[key].shape)} "
          f"but the model expects {tuple(want)} (config.json or num_labels "
          "disagree with the weights)."
      )
    params[p] = jnp.asarray(value, dtype=param_dtype)
  if missing:
    raise ValueError(
        f"{path}: {len(missing)} encoder tensor(s) missing from the "
        f"checkpoint, e.g. {missing[:5]}."
    )
  if missing_head:
    logging.warning(
        "%s: head tensors not in the checkpoint, randomly " "initialised: %s",
        path,
        missing_head,
    )
  unused = sorted(set(tensors) - used - set(_BUFFERS))
  if unused:
    logging.info("%s: unused tensors: %s", path, unused)
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, _unflatten(params))
  nnx.update(model, state)
  return model


def hf_config(model: Model) -> dict[str, Any]:
  """The config.json dict `save_pretrained` writes for `model`."""
  head = _head_of(model)
  hf = model.config.to_hf()
  hf["architectures"] = [_ARCHITECTURES[(model.config.model_type, head)]]
  if head == "classification":
    n = model.num_labels
    hf["num_labels"] = n
    hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
    hf["label2id"] = {f"LABEL_{i}": i for i in range(n)}
    hf["problem_type"] = (
        "regression" if n == 1 else "single_label_classification"
    )
  return hf


def state_dict(model: Model) -> dict[str, np.ndarray]:
  """HF-named numpy tensors of `model` (torch layout, prefixes as HF saves)."""
  params = _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  out = {}
  for p, (name, _) in _hf_names(model).items():
    value = np.asarray(jax.device_get(params[p]))
    out[name] = np.ascontiguousarray(value.T if p[-1] == "kernel" else value)
  return out


def save_pretrained(
    model: Model, path: str | os.PathLike[str], *, tokenizer: Any = None
) -> None:
  """Writes config.json + model.safetensors (+ tokenizer) to `path`.

  Files are written into a temporary sibling directory first. A new `path`
  appears by one rename; into an existing directory each file is moved with
  `os.replace` (other files there are kept). A failure while writing leaves
  `path` untouched.
  """
  path = pathlib.Path(path)
  if path.exists() and not path.is_dir():
    raise FileExistsError(f"{path} exists and is not a directory.")
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(
      tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent)
  )
  try:
    (tmp / "config.json").write_text(
        json.dumps(hf_config(model), indent=2, sort_keys=True) + "\n"
    )
    safetensors.numpy.save_file(
        state_dict(model), tmp / _SAFETENSORS, metadata={"format": "pt"}
    )
    if tokenizer is not None:
      tokenizer.save_pretrained(str(tmp))
    if not path.exists():
      tmp.rename(path)
      return
    for f in tmp.iterdir():
      os.replace(f, path / f.name)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(path: str | os.PathLike[str]):
  """Loads the HF tokenizer saved in a local directory (never downloads).

  Raises:
    FileNotFoundError: `path` is not a directory or has no tokenizer files.
    ValueError: a tokenizer file is corrupt, or the vocabulary holds only
      special tokens (the message names the file or the directory).
  """
  path = hf_dir.check_tokenizer_dir(path)
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  # from_pretrained(dir) reads vocab/merges itself; building a fast tokenizer
  # from `vocab_file=` silently yields an empty vocabulary (ECOSYSTEM.md).
  # On a malformed file transformers and the Rust tokenizers raise OSError,
  # ValueError, KeyError or a bare Exception: all mean "a file is bad".
  try:
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
  except Exception as e:  # pylint: disable=broad-exception-caught
    raise ValueError(
        f"{path}: cannot load the tokenizer ({type(e).__name__}: {e}); a"
        " tokenizer file there is corrupt or incomplete: re-export or"
        " re-download it."
    ) from e
  num_special = len(set(tokenizer.all_special_ids))
  if len(tokenizer) <= num_special:
    raise ValueError(
        f"{path}: the tokenizer holds only its {num_special} special tokens;"
        " its vocabulary file is empty or unreadable."
    )
  return tokenizer
