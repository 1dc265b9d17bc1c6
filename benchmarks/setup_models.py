"""Models, batches and the CoDIR step that the benchmarks measure.

Not a benchmark. Shared by train_step.py, contrastive_overhead.py,
inference.py and profile_step.py:

- JAX: random-weight codir_jax teacher/student (`jax_models`) and the
  trainer's jitted CoDIR step compiled ahead of time for the benchmark
  shapes (`build_jax_step`: `codir_jax.train.loop.compile_run`, one jit,
  donated state, a 1-device mesh).
- PyTorch (reference; never part of the codir_jax package): the same pair
  as transformers `BertForSequenceClassification` (`torch_models`) and the
  CoDIR step in eager mode (`TorchCoDIR`).
- Random full-length batches and bank labels (`host_batch`,
  `bank_label_array`); `--teacher` picks the sizes, `--small` tiny models (`model_dims`).
"""

from __future__ import annotations

from typing import Any

TEACHERS = {  # --teacher: sizes of the random-weight teacher.
    "bert-base": dict(hidden=768, layers=12, heads=12, ffn=3072, vocab=30522),
    # all-MiniLM-L6-v2's shapes: the teacher of experiments/evidence.py.
    "minilm-l6": dict(hidden=384, layers=6, heads=12, ffn=1536, vocab=30522),
}


def model_dims(args) -> dict[str, int]:
  """Teacher sizes: `args.teacher`, or a tiny model for `--small` runs.

  The student has every other teacher layer (half the depth, same width).
  """
  if args.small:
    return dict(hidden=128, layers=4, heads=4, ffn=512, vocab=1000)
  return TEACHERS[getattr(args, "teacher", "bert-base")]


def host_batch(args, bank_labels) -> dict[str, Any]:
  """Random full-length batch; labels are the bank labels of its ids."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(args.seed)
  b, t = args.batch_size, args.seq_len
  vocab = model_dims(args)["vocab"]
  ids = rng.choice(len(bank_labels), size=b, replace=False).astype(np.int32)
  return {
      "input_ids": rng.integers(5, vocab, size=(b, t), dtype=np.int32),
      "attention_mask": np.ones((b, t), np.int32),
      "token_type_ids": np.zeros((b, t), np.int32),
      "labels": np.asarray(bank_labels)[ids].astype(np.int32),
      "example_ids": ids,
      "valid": np.ones((b,), bool),
  }


def bank_label_array(args):
  """[N] int32 random labels of the bank slots (N = args.bank_size)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(args.seed + 1)
  return rng.integers(0, args.num_labels, size=args.bank_size).astype(np.int32)


# ---------------------------------------------------------------------------
# JAX side.


def jax_models(args, dtype=None):
  """(teacher, student) codir_jax SequenceClassifiers, random weights."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from codir_jax import models  # pylint: disable=g-import-not-at-top

  d = model_dims(args)
  config = models.EncoderConfig(
      vocab_size=d["vocab"],
      hidden_size=d["hidden"],
      num_layers=d["layers"],
      num_heads=d["heads"],
      intermediate_size=d["ffn"],
      dtype=dtype or jnp.float32,
  )
  teacher = models.SequenceClassifier(
      config, args.num_labels, rngs=nnx.Rngs(args.seed)
  )
  return teacher, models.make_student(teacher)


def build_jax_step(args, *, crd_weight: float = 0.1, dtype=None):
  """The trainer's jitted CoDIR step, compiled for the benchmark shapes.

  Returns:
    (compiled step, initial state, device batch, teacher params, flops per
    step from XLA's cost analysis or None).
  """
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top

  from codir_jax import sharding  # pylint: disable=g-import-not-at-top
  from codir_jax.train import builders  # pylint: disable=g-import-not-at-top
  from codir_jax.train import forward  # pylint: disable=g-import-not-at-top
  from codir_jax.train import loop  # pylint: disable=g-import-not-at-top
  from codir_jax.train import objective  # pylint: disable=g-import-not-at-top
  from codir_jax.train import run as run_lib  # pylint: disable=g-import-not-at-top
  from codir_jax.train import settings  # pylint: disable=g-import-not-at-top

  teacher, student = jax_models(args, dtype)
  ls, lt = student.config.num_layers, teacher.config.num_layers
  loss = objective.Spec(
      task_kind="classification",
      kd_weight=0.5,
      kd_temperature=2.0,
      crd_weight=crd_weight,
      temperature=0.07,
      student_layers=tuple(range(1, ls + 1)),
      teacher_layers=objective.teacher_layer_ids(
          "even", num_student=ls, num_teacher=lt
      ),
      num_negatives=args.num_negatives,
      momentum=0.5,
      num_train_examples=args.bank_size,
  )
  graphs = {"teacher": nnx.graphdef(teacher)}
  params = {"student": nnx.state(student)}
  if crd_weight > 0:
    proj_s, proj_t = builders.projection_heads(
        num_layers=ls,
        student_hidden=student.config.hidden_size,
        teacher_hidden=teacher.config.hidden_size,
        proj_dim=128,
        per_layer=False,
        seed=args.seed + 1,
    )
    graphs.update(proj_s=nnx.graphdef(proj_s), proj_t=nnx.graphdef(proj_t))
    params.update(proj_s=nnx.state(proj_s), proj_t=nnx.state(proj_t))
  mesh = sharding.make_mesh([("data", -1)], devices=jax.devices()[:1])
  labels = bank_label_array(args)
  run = run_lib.Run(
      workdir="",
      mode="distill",
      mesh=mesh,
      rules=dict(sharding.DEFAULT_RULES),
      model=student,
      teacher_model=teacher,
      graphs=forward.Graphs(student=nnx.graphdef(student), **graphs),
      params=params,
      objective=objective.build(loss),
      optim=settings.OptimSettings(
          lr=1e-5,
          weight_decay=0.1,
          b1=0.9,
          b2=0.98,
          eps=1e-6,
          warmup_frac=0.06,
          clip_norm=1.0,
          total_steps=1000,
      ),
      batch_size=args.batch_size,
      seed=args.seed,
      make_iterator=None,
      evaluate=None,
      tokenizer=None,
      bank_slots=args.bank_size if loss.uses_bank else 0,
      bank_labels=labels if loss.uses_bank else None,
      bank_all_valid=True,
      ckpt=None,
      log_every=1,
      eval_every=0,
      patience=0,
      tensorboard=False,
      export_name="student",
      fingerprint={},
  )
  compiled = loop.compile_run(run)
  state = compiled.init()
  batch = sharding.put_batch(host_batch(args, labels), mesh)
  exe = compiled.train_step.lower(
      state, batch, compiled.teacher_params
  ).compile()
  try:
    flops = float(exe.cost_analysis()["flops"])
  except Exception:  # pylint: disable=broad-except
    flops = None
  return exe, state, batch, compiled.teacher_params, flops


# ---------------------------------------------------------------------------
# PyTorch side (reference; never part of the codir_jax package).


def torch_models(args):
  """(teacher, student) BertForSequenceClassification, random weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  d = model_dims(args)
  torch.manual_seed(args.seed)
  cfg = transformers.BertConfig(
      vocab_size=d["vocab"],
      hidden_size=d["hidden"],
      num_hidden_layers=d["layers"],
      num_attention_heads=d["heads"],
      intermediate_size=d["ffn"],
      num_labels=args.num_labels,
  )
  teacher = transformers.BertForSequenceClassification(cfg).eval()
  cfg_s = transformers.BertConfig(
      **{**cfg.to_dict(), "num_hidden_layers": d["layers"] // 2}
  )
  student = transformers.BertForSequenceClassification(cfg_s)
  sd = teacher.state_dict()
  for i in range(cfg_s.num_hidden_layers):  # Teacher layers 2, 4, ...
    src = f"bert.encoder.layer.{2 * i + 1}."
    for k, v in list(sd.items()):
      if k.startswith(src):
        sd[k.replace(src, f"bert.encoder.layer.{i}.")] = v
  student.load_state_dict(
      {k: v.clone() for k, v in sd.items() if k in student.state_dict()}
  )
  for p in teacher.parameters():
    p.requires_grad_(False)
  return teacher, student


class TorchCoDIR:
  """The CoDIR step in PyTorch eager, mirroring codir_jax.train.step."""

  def __init__(self, args, device):
    import torch  # pylint: disable=g-import-not-at-top

    self.torch, self.args, self.device = torch, args, device
    teacher, student = torch_models(args)
    self.teacher, self.student = teacher.to(device), student.to(device)
    ls = student.config.num_hidden_layers
    d = student.config.hidden_size
    self.s_layers = list(range(1, ls + 1))
    self.t_layers = list(range(2, teacher.config.num_hidden_layers + 1, 2))
    self.proj_s = torch.nn.Linear(ls * d, 128).to(device)
    self.proj_t = torch.nn.Linear(ls * d, 128).to(device)
    params = [
        p
        for m in (self.student, self.proj_s, self.proj_t)
        for p in m.parameters()
    ]
    self.params = params
    self.opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": 0.1},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=1e-5,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    total, warm = 1000, 60
    self.sched = torch.optim.lr_scheduler.LambdaLR(
        self.opt,
        lambda s: s / warm
        if s < warm
        else max(0.0, (total - s) / (total - warm)),
    )
    gen = torch.Generator().manual_seed(args.seed)
    std = 1.0 / (128 / 3.0) ** 0.5
    self.bank_s = (
        (torch.rand(args.bank_size, 128, generator=gen) * 2 - 1) * std
    ).to(device)
    self.bank_t = (
        (torch.rand(args.bank_size, 128, generator=gen) * 2 - 1) * std
    ).to(device)
    labels = torch.as_tensor(bank_label_array(args)).long()
    # Per-label pools of eligible (different-label) slots, padded.
    pools = [
        torch.nonzero(labels != c).flatten() for c in range(args.num_labels)
    ]
    width = max(len(p) for p in pools)
    self.pool = torch.stack(
        [torch.nn.functional.pad(p, (0, width - len(p))) for p in pools]
    ).to(device)
    self.pool_size = torch.tensor([len(p) for p in pools]).to(device)
    gpu = device.type == "cuda"
    self.autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=gpu
    )

  def _pool(self, hidden_states, layers, mask):
    """Masked mean of each chosen layer, concatenated -> [B, L*D]."""
    torch = self.torch
    h = torch.stack([hidden_states[l] for l in layers], 1).float()
    m = mask[:, None, :, None].float()  # [B, 1, T, 1]
    pooled = (h * m).sum(2) / m.sum(2).clamp_min(1.0)  # [B, L, D]
    return pooled.flatten(1)

  def _info_nce(self, q, pos, bank, neg_ids):
    torch = self.torch
    negs = bank[neg_ids]  # [B, K, P]
    l_pos = (q * pos).sum(-1, keepdim=True)  # [B, 1]
    l_neg = torch.einsum("bp,bkp->bk", q, negs)
    logits = torch.cat([l_pos, l_neg], 1) / 0.07
    return torch.logsumexp(logits, 1) - logits[:, 0]

  def _write(self, bank, ids, z):
    torch = self.torch
    new = 0.5 * bank[ids] + 0.5 * z
    bank[ids] = torch.nn.functional.normalize(new, dim=-1, eps=1e-12)

  def step(self, batch):
    """One update; returns the loss (a 0-d tensor)."""
    torch, args = self.torch, self.args
    f = torch.nn.functional
    ids, mask = batch["input_ids"], batch["attention_mask"]
    tt, y, ex = batch["token_type_ids"], batch["labels"], batch["example_ids"]
    with self.autocast:
      with torch.no_grad():
        t_out = self.teacher(
            input_ids=ids,
            attention_mask=mask,
            token_type_ids=tt,
            output_hidden_states=True,
        )
        t_pooled = self._pool(t_out.hidden_states, self.t_layers, mask)
      s_out = self.student(
          input_ids=ids,
          attention_mask=mask,
          token_type_ids=tt,
          output_hidden_states=True,
      )
      s_pooled = self._pool(s_out.hidden_states, self.s_layers, mask)
    s_logits, t_logits = s_out.logits.float(), t_out.logits.float()
    ce = f.cross_entropy(s_logits, y)
    kd = 4.0 * f.kl_div(
        f.log_softmax(s_logits / 2.0, -1),
        f.log_softmax(t_logits / 2.0, -1),
        log_target=True,
        reduction="batchmean",
    )
    z_s = f.normalize(self.proj_s(s_pooled), dim=-1, eps=1e-12)
    z_t = f.normalize(self.proj_t(t_pooled), dim=-1, eps=1e-12)
    k = args.num_negatives
    u = (
        torch.rand(len(y), k, device=self.device) * self.pool_size[y][:, None]
    ).long()
    neg_ids = self.pool[y[:, None], u]  # [B, K], label != y, never self.
    u2 = (
        torch.rand(len(y), k, device=self.device) * self.pool_size[y][:, None]
    ).long()
    neg_ids2 = self.pool[y[:, None], u2]
    crd = (
        0.5
        * (
            self._info_nce(z_s, z_t, self.bank_t, neg_ids)
            + self._info_nce(z_t, z_s, self.bank_s, neg_ids2)
        ).mean()
    )
    loss = 0.5 * ce + 0.5 * kd + 0.1 * crd
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.params, 1.0)
    self.opt.step()
    self.sched.step()
    with torch.no_grad():
      self._write(self.bank_s, ex, z_s.detach())
      self._write(self.bank_t, ex, z_t.detach())
    return loss.detach()
