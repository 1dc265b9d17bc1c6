"""A tiny teacher directory, a tiny GLUE task and tiny configs for train tests.

The teacher is a random 2-layer, width-32 BERT sequence classifier saved in
the Hugging Face layout, with a WordPiece tokenizer over the words of the
embedded demo task, so the whole train path (HF import, tokenisation,
batches, step, checkpoints, export) runs in seconds and offline.
"""

from __future__ import annotations

import os
import sys

from flax import nnx
import jax

from codir_jax import models
from codir_jax.train import task_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from configs import tiny  # noqa: E402  pylint: disable=g-import-not-at-top

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def make_tokenizer():
  """A fast WordPiece tokenizer whose vocabulary covers the demo task."""
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  from tokenizers import models as tok_models  # pylint: disable=g-import-not-at-top
  from tokenizers import normalizers, pre_tokenizers, processors  # pylint: disable=g-import-not-at-top
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top

  texts, _ = task_data.demo_sentences(3000, 0)
  words = sorted({w for t in texts for w in t.split()})
  vocab = {w: i for i, w in enumerate(list(SPECIALS) + words)}
  tok = Tokenizer(tok_models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]",
      pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
  )
  return PreTrainedTokenizerFast(
      tokenizer_object=tok,
      unk_token="[UNK]",
      pad_token="[PAD]",
      cls_token="[CLS]",
      sep_token="[SEP]",
      mask_token="[MASK]",
  )


def _tiny_config(tokenizer, num_layers: int, dropout: float):
  return models.EncoderConfig(
      model_type="bert",
      vocab_size=len(tokenizer),
      hidden_size=32,
      num_layers=num_layers,
      num_heads=2,
      intermediate_size=64,
      max_position_embeddings=64,
      type_vocab_size=2,
      pad_token_id=0,
      hidden_dropout=dropout,
      attention_dropout=dropout,
  )


def make_teacher_dir(
    path: str,
    *,
    num_labels: int = 2,
    seed: int = 0,
    num_layers: int = 2,
    dropout: float = 0.1,
    head_std: float = 0.0,
) -> str:
  """Saves a random tiny BERT classifier + tokenizer to `path`.

  `head_std` > 0 redraws the output layer's kernel from N(0, head_std^2):
  confident, input-dependent logits, so KD against the teacher is far from
  0 (the default head starts near zero, as in transformers).
  """
  tokenizer = make_tokenizer()
  config = _tiny_config(tokenizer, num_layers, dropout)
  model = models.SequenceClassifier(config, num_labels, rngs=nnx.Rngs(seed))
  if head_std > 0:
    kernel = model.out_proj.kernel
    kernel.value = head_std * jax.random.normal(
        jax.random.key(seed + 100), kernel.value.shape
    )
  models.save_pretrained(model, path, tokenizer=tokenizer)
  return path


def make_glue_dir(path: str, *, num_train: int = 40, num_dev: int = 16) -> str:
  """Writes SST-2/{train,dev}.tsv (demo sentences) under `path`."""
  return task_data.write_demo_task(
      path, num_train=num_train, num_dev=num_dev, seed=0
  )


def _override(c, kw):
  """Applies `{"group__field": value}` overrides to config `c`."""
  for key, value in kw.items():
    node = c
    *parents, leaf = key.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def tiny_config(teacher: str, data: str, arg: str | None = None, **kw):
  """configs/tiny.py pointed at the tiny teacher and task, plus overrides.

  Keyword overrides use `__` for nesting: `optim__num_steps=4`.
  """
  c = tiny.get_config(arg)
  c.teacher.path = teacher
  c.task.data_dir = data
  return _override(c, kw)


def make_mlm_teacher_dir(
    path: str, *, seed: int = 0, num_layers: int = 2
) -> str:
  """Saves a random tiny BERT masked LM + tokenizer to `path`."""
  tokenizer = make_tokenizer()
  model = models.MaskedLM(
      _tiny_config(tokenizer, num_layers, 0.0), rngs=nnx.Rngs(seed)
  )
  models.save_pretrained(model, path, tokenizer=tokenizer)
  return path


def write_corpus(path: str, *, num_lines: int = 400, seed: int = 0) -> str:
  """One demo sentence per line (documents for pretrain_text)."""
  texts, _ = task_data.demo_sentences(num_lines, seed)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(t.strip() for t in texts) + "\n")
  return path


def pretrain_config(teacher: str, train: str, heldout: str, **kw):
  """configs/pretrain_codir.py shrunk for tests, plus `__` overrides."""
  from configs import pretrain_codir  # pylint: disable=g-import-not-at-top

  c = pretrain_codir.get_config()
  c.teacher.path = teacher
  c.pretrain.train_files = (train,)
  c.pretrain.eval_files = (heldout,)
  c.pretrain.eval_batches = 2
  c.task.max_len = 16
  c.teacher.dtype = c.student.dtype = "float32"
  c.student.layers = (2,)
  c.loss.proj_dim = 16
  c.bank.queue_size = 12
  c.bank.num_negatives = 8
  c.optim.batch_size = 8
  c.optim.lr = 1e-3
  c.optim.num_steps = 4
  c.optim.warmup_frac = 0.1
  c.ckpt.every_steps = 100
  c.ckpt.async_save = False
  c.log.every_steps = 2
  c.log.eval_every_steps = 0
  c.log.tensorboard = False
  return _override(c, kw)


def hf_dev_accuracy(export_dir: str, data_dir: str) -> float:
  """SST-2 dev accuracy of an exported model, computed by transformers.

  An independent path: PyTorch model and tokenizer from the HF export, the
  dev TSV read with `csv`, accuracy counted in Python.
  """
  import csv  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  with open(os.path.join(data_dir, "SST-2", "dev.tsv"), encoding="utf-8") as f:
    rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  tok = transformers.AutoTokenizer.from_pretrained(export_dir)
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      export_dir
  ).eval()
  enc = tok(
      [r["sentence"] for r in rows],
      padding=True,
      truncation=True,
      max_length=16,
      return_tensors="pt",
  )
  with torch.no_grad():
    pred = model(**enc).logits.argmax(-1).tolist()
  return sum(p == int(r["label"]) for p, r in zip(pred, rows)) / len(rows)
