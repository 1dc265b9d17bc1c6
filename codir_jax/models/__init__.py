"""codir_jax.models: BERT/RoBERTa encoder, heads, HF import/export, student.

Public API (see API.md):
  EncoderConfig, EncoderOutput, Encoder     one encoder for BERT and RoBERTa
  SequenceClassifier, MaskedLM              task heads, HF-compatible layout
  from_pretrained, save_pretrained,         local Hugging Face directories
  load_tokenizer
  make_student, default_layers              layer-subset student init
"""

from codir_jax.models.encoder import Encoder
from codir_jax.models.encoder import EncoderConfig
from codir_jax.models.encoder import EncoderOutput
from codir_jax.models.heads import MaskedLM
from codir_jax.models.heads import SequenceClassifier
from codir_jax.models.hf_io import from_pretrained
from codir_jax.models.hf_io import load_tokenizer
from codir_jax.models.hf_io import save_pretrained
from codir_jax.models.student import default_layers
from codir_jax.models.student import make_student

__all__ = [
    "Encoder",
    "EncoderConfig",
    "EncoderOutput",
    "MaskedLM",
    "SequenceClassifier",
    "default_layers",
    "from_pretrained",
    "load_tokenizer",
    "make_student",
    "save_pretrained",
]
