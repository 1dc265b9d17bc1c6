"""Train-step throughput: codir_jax CoDIR step vs the same step in PyTorch.

Not a test. Both sides run the full CoDIR fine-tuning step on random
weights and random tokens: frozen 12-layer BERT-base teacher forward (no
gradient), 6-layer student forward/backward (teacher layers 2, 4, .., 12
copied, dropout 0.1), masked-mean pooling of all student layers and of the
teacher's even layers, concat + linear projection to P = 128 + L2
normalisation on both sides, CE + KD (beta 0.5, rho 2) + lambda * symmetric
InfoNCE (tau 0.07) against K label-aware negatives per example from two
memory banks of N slots, AdamW (0.9, 0.98, eps 1e-6, wd 0.1, no decay on
1-D params) with global-norm clipping 1.0 and a linear schedule, and
momentum-0.5 bank writes.

- JAX: exactly what the trainer runs, `codir_jax.train.loop.compile_run`
  (one jit, donated state, sharded over a 1-device mesh), compiled once
  ahead of time with `.lower().compile()`.
- PyTorch: eager `transformers.BertForSequenceClassification` (default
  `sdpa` attention), `torch.optim.AdamW`, and a hand-written bank (negatives
  drawn from per-label index pools, the idiomatic PyTorch way; the JAX bank
  builds a [B, N] eligibility mask each step, which is more general).

Each framework runs in its own subprocess, one after the other, pinned to
the same CPU cores (`os.sched_setaffinity`) with one intra-op thread per
core (`torch.set_num_threads`; XLA sizes its Eigen pool from the affinity
mask), so neither threadpool competes with the other. Warm-up steps (and
compilation) are excluded; the median over `--steps` timed steps is
reported.

On a GPU (not available on the dev machine: that path is written but was
never run) both sides use bf16 compute (JAX: `EncoderConfig.dtype`,
PyTorch: `torch.autocast`) and MFU is reported against `--peak_tflops`.
On CPU the table gives achieved GFLOP/s instead (no reliable peak: the
173 GFLOP/s "matmul peak" noted in /work/shared/ECOSYSTEM.md is exceeded
by these steps). FLOPs per step are XLA's cost analysis of the compiled
JAX step; the PyTorch step does the same math, so the same count is used
for both.

  python benchmarks/train_step.py [--batch_size 8 --seq_len 128
      --num_negatives 1024 --bank_size 4096 --steps 5 --warmup 2]
      [--small] [--frameworks jax,torch] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# Dense bf16 peak per GPU kind (vendor datasheets, no sparsity).
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}
DEFAULT_THREADS = len(os.sched_getaffinity(0))


def model_dims(small: bool) -> dict[str, int]:
  """Teacher sizes: BERT-base, or a tiny model for `--small` smoke runs."""
  if small:
    return dict(hidden=128, layers=4, heads=4, ffn=512, vocab=1000)
  return dict(hidden=768, layers=12, heads=12, ffn=3072, vocab=30522)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
  """Flags shared with contrastive_overhead.py and inference.py."""
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps")
  parser.add_argument("--small", action="store_true",
                      help="tiny models and sizes: a fast smoke run")
  parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                      help="CPU cores to pin each framework to")
  parser.add_argument("--num_labels", type=int, default=2)
  parser.add_argument("--seed", type=int, default=0)


def pin_cores(threads: int) -> list[int]:
  """Pins this process to the first `threads` allowed cores."""
  cores = sorted(os.sched_getaffinity(0))[:threads]
  os.sched_setaffinity(0, cores)
  return cores


def host_batch(args, bank_labels) -> dict[str, Any]:
  """Random full-length batch; labels are the bank labels of its ids."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(args.seed)
  b, t = args.batch_size, args.seq_len
  vocab = model_dims(args.small)["vocab"]
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

  d = model_dims(args.small)
  config = models.EncoderConfig(
      vocab_size=d["vocab"], hidden_size=d["hidden"],
      num_layers=d["layers"], num_heads=d["heads"],
      intermediate_size=d["ffn"], dtype=dtype or jnp.float32,
  )
  teacher = models.SequenceClassifier(config, args.num_labels,
                                      rngs=nnx.Rngs(args.seed))
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
  from codir_jax.train import evaluation  # pylint: disable=g-import-not-at-top
  from codir_jax.train import loop  # pylint: disable=g-import-not-at-top
  from codir_jax.train import optimizer  # pylint: disable=g-import-not-at-top
  from codir_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top

  teacher, student = jax_models(args, dtype)
  ls, lt = student.config.num_layers, teacher.config.num_layers
  loss = step_lib.LossSettings(
      task_kind="classification", kd_weight=0.5, kd_temperature=2.0,
      crd_weight=crd_weight, temperature=0.07,
      student_layers=tuple(range(1, ls + 1)),
      teacher_layers=builders.teacher_layer_ids("even", num_student=ls,
                                                num_teacher=lt),
      num_negatives=args.num_negatives, momentum=0.5,
      num_train_examples=args.bank_size,
  )
  graphs = {"teacher": nnx.graphdef(teacher)}
  params = {"student": nnx.state(student)}
  if crd_weight > 0:
    proj_s, proj_t = builders.projection_heads(
        num_layers=ls, student_hidden=student.config.hidden_size,
        teacher_hidden=teacher.config.hidden_size, proj_dim=128,
        per_layer=False, seed=args.seed + 1)
    graphs.update(proj_s=nnx.graphdef(proj_s), proj_t=nnx.graphdef(proj_t))
    params.update(proj_s=nnx.state(proj_s), proj_t=nnx.state(proj_t))
  mesh = sharding.make_mesh([("data", -1)], devices=jax.devices()[:1])
  labels = bank_label_array(args)
  run = loop.Run(
      workdir="", mode="distill", mesh=mesh,
      rules=dict(sharding.DEFAULT_RULES), model=student,
      teacher_model=teacher,
      graphs=step_lib.Graphs(student=nnx.graphdef(student), **graphs),
      params=params, loss=loss,
      optim=optimizer.OptimSettings(
          lr=1e-5, weight_decay=0.1, b1=0.9, b2=0.98, eps=1e-6,
          warmup_frac=0.06, clip_norm=1.0, total_steps=1000),
      batch_size=args.batch_size, seed=args.seed, make_iterator=None,
      evaluate=None, tokenizer=None,
      bank_slots=args.bank_size if loss.uses_bank else 0,
      bank_labels=labels if loss.uses_bank else None, bank_all_valid=True,
      ckpt=None, log_every=1, eval_every=0, tensorboard=False,
      export_name="student", fingerprint={},
  )
  compiled = loop.compile_run(run)
  state = compiled.init()
  batch = evaluation.put_batch(host_batch(args, labels), mesh)
  exe = compiled.train_step.lower(state, batch,
                                  compiled.teacher_params).compile()
  try:
    flops = float(exe.cost_analysis()["flops"])
  except Exception:  # pylint: disable=broad-except
    flops = None
  return exe, state, batch, compiled.teacher_params, flops


def time_jax_step(exe, state, batch, teacher_params, *, steps, warmup):
  """Runs warm-up + timed steps; returns the per-step seconds."""
  import jax  # pylint: disable=g-import-not-at-top

  times = []
  for i in range(warmup + steps):
    t0 = time.perf_counter()
    state, metrics = exe(state, batch, teacher_params)
    jax.block_until_ready((state, metrics))
    if i >= warmup:
      times.append(time.perf_counter() - t0)
  loss = float(metrics["loss"][0])
  return times, loss


def jax_worker(args) -> dict[str, Any]:
  """Measures the JAX step (run in a pinned subprocess)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  gpu = jax.default_backend() == "gpu"
  t0 = time.perf_counter()
  exe, state, batch, tp, flops = build_jax_step(
      args, dtype=jnp.bfloat16 if gpu else None)
  compile_s = time.perf_counter() - t0
  times, loss = time_jax_step(exe, state, batch, tp, steps=args.steps,
                              warmup=args.warmup)
  return dict(framework="jax", backend=jax.default_backend(),
              device=str(jax.devices()[0].device_kind),
              dtype="bfloat16" if gpu else "float32", times=times,
              flops=flops, setup_compile_s=compile_s, final_loss=loss,
              jax_version=jax.__version__)


# ---------------------------------------------------------------------------
# PyTorch side (reference; never part of the codir_jax package).


def torch_models(args):
  """(teacher, student) BertForSequenceClassification, random weights."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  d = model_dims(args.small)
  torch.manual_seed(args.seed)
  cfg = transformers.BertConfig(
      vocab_size=d["vocab"], hidden_size=d["hidden"],
      num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
      intermediate_size=d["ffn"], num_labels=args.num_labels)
  teacher = transformers.BertForSequenceClassification(cfg).eval()
  cfg_s = transformers.BertConfig(**{**cfg.to_dict(),
                                     "num_hidden_layers": d["layers"] // 2})
  student = transformers.BertForSequenceClassification(cfg_s)
  sd = teacher.state_dict()
  for i in range(cfg_s.num_hidden_layers):  # Teacher layers 2, 4, ...
    src = f"bert.encoder.layer.{2 * i + 1}."
    for k, v in list(sd.items()):
      if k.startswith(src):
        sd[k.replace(src, f"bert.encoder.layer.{i}.")] = v
  student.load_state_dict(
      {k: v.clone() for k, v in sd.items() if k in student.state_dict()})
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
    params = [p for m in (self.student, self.proj_s, self.proj_t)
              for p in m.parameters()]
    self.params = params
    self.opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.1},
         {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
        lr=1e-5, betas=(0.9, 0.98), eps=1e-6)
    total, warm = 1000, 60
    self.sched = torch.optim.lr_scheduler.LambdaLR(
        self.opt, lambda s: s / warm if s < warm
        else max(0.0, (total - s) / (total - warm)))
    gen = torch.Generator().manual_seed(args.seed)
    std = 1.0 / (128 / 3.0) ** 0.5
    self.bank_s = ((torch.rand(args.bank_size, 128, generator=gen) * 2 - 1)
                   * std).to(device)
    self.bank_t = ((torch.rand(args.bank_size, 128, generator=gen) * 2 - 1)
                   * std).to(device)
    labels = torch.as_tensor(bank_label_array(args)).long()
    # Per-label pools of eligible (different-label) slots, padded.
    pools = [torch.nonzero(labels != c).flatten()
             for c in range(args.num_labels)]
    width = max(len(p) for p in pools)
    self.pool = torch.stack([torch.nn.functional.pad(p, (0, width - len(p)))
                             for p in pools]).to(device)
    self.pool_size = torch.tensor([len(p) for p in pools]).to(device)
    gpu = device.type == "cuda"
    self.autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                                   enabled=gpu)

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
        t_out = self.teacher(input_ids=ids, attention_mask=mask,
                             token_type_ids=tt, output_hidden_states=True)
        t_pooled = self._pool(t_out.hidden_states, self.t_layers, mask)
      s_out = self.student(input_ids=ids, attention_mask=mask,
                           token_type_ids=tt, output_hidden_states=True)
      s_pooled = self._pool(s_out.hidden_states, self.s_layers, mask)
    s_logits, t_logits = s_out.logits.float(), t_out.logits.float()
    ce = f.cross_entropy(s_logits, y)
    kd = 4.0 * f.kl_div(f.log_softmax(s_logits / 2.0, -1),
                        f.log_softmax(t_logits / 2.0, -1),
                        log_target=True, reduction="batchmean")
    z_s = f.normalize(self.proj_s(s_pooled), dim=-1, eps=1e-12)
    z_t = f.normalize(self.proj_t(t_pooled), dim=-1, eps=1e-12)
    k = args.num_negatives
    u = (torch.rand(len(y), k, device=self.device)
         * self.pool_size[y][:, None]).long()
    neg_ids = self.pool[y[:, None], u]  # [B, K], label != y, never self.
    u2 = (torch.rand(len(y), k, device=self.device)
          * self.pool_size[y][:, None]).long()
    neg_ids2 = self.pool[y[:, None], u2]
    crd = 0.5 * (self._info_nce(z_s, z_t, self.bank_t, neg_ids)
                 + self._info_nce(z_t, z_s, self.bank_s, neg_ids2)).mean()
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


def torch_worker(args) -> dict[str, Any]:
  """Measures the PyTorch eager step (run in a pinned subprocess)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(args.threads)
  torch.set_num_interop_threads(1)
  gpu = torch.cuda.is_available()
  device = torch.device("cuda" if gpu else "cpu")
  t0 = time.perf_counter()
  model = TorchCoDIR(args, device)
  batch = {k: torch.as_tensor(np.asarray(v)).to(device)
           for k, v in host_batch(args, bank_label_array(args)).items()}
  batch["labels"] = batch["labels"].long()
  batch["example_ids"] = batch["example_ids"].long()
  setup_s = time.perf_counter() - t0
  times = []
  for i in range(args.warmup + args.steps):
    t0 = time.perf_counter()
    loss = model.step(batch)
    if gpu:
      torch.cuda.synchronize()
    if i >= args.warmup:
      times.append(time.perf_counter() - t0)
  return dict(framework="torch", backend=device.type,
              device=torch.cuda.get_device_name() if gpu else "cpu",
              dtype="bfloat16" if gpu else "float32", times=times,
              setup_compile_s=setup_s, final_loss=float(loss),
              torch_threads=torch.get_num_threads(),
              torch_version=torch.__version__,
              transformers_version=transformers.__version__)


# ---------------------------------------------------------------------------
# Driver.


def run_worker(script: str, framework: str, argv: list[str],
               env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs `script --_worker framework argv` and returns its JSON result."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "result.json")
    cmd = [sys.executable, script, "--_worker", framework,
           "--_result", out] + argv
    subprocess.run(cmd, check=True, env=env)
    with open(out) as f:
      return json.load(f)


def load_snapshot() -> str:
  """`uptime` load averages and the other busy processes, for the record."""
  with open("/proc/loadavg") as f:
    load = " ".join(f.read().split()[:3])
  ps = subprocess.run(
      ["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"],
      capture_output=True, text=True, check=False).stdout.splitlines()
  me = {os.getpid(), os.getppid()}
  busy = [l.strip()[:100] for l in ps[1:6]
          if float(l.split()[1]) > 10 and int(l.split()[0]) not in me]
  return f"load {load}; busy: {busy or 'none'}"


def peak_flops(result: dict[str, Any], peak_tflops: float | None):
  if result["backend"] == "cpu":
    return None
  if peak_tflops:
    return peak_tflops * 1e12
  for name, tf in GPU_PEAK_TFLOPS.items():
    if name in result["device"]:
      return tf * 1e12
  return None


def summarise(r: dict[str, Any], batch_size: int, flops, peak) -> dict:
  med = statistics.median(r["times"])
  row = dict(r, median_s=med, min_s=min(r["times"]),
             examples_per_s=batch_size / med)
  if flops:
    row["gflops_per_s"] = flops / med / 1e9
  if flops and peak:
    row["mfu"] = flops / med / peak
  return row


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_common_flags(parser)
  parser.add_argument("--num_negatives", type=int, default=1024, help="K")
  parser.add_argument("--bank_size", type=int, default=4096, help="N")
  parser.add_argument("--frameworks", default="jax,torch")
  parser.add_argument("--peak_tflops", type=float, default=None,
                      help="GPU peak for MFU (default: by device name)")
  parser.add_argument("--out", default=None, help="JSON results file")
  parser.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--_result", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.small:
    args.batch_size, args.seq_len = min(args.batch_size, 4), 32
    args.num_negatives, args.bank_size = 64, 256
  return args


def main() -> None:
  args = parse_args()
  if args._worker:  # pylint: disable=protected-access
    pin_cores(args.threads)
    fn = {"jax": jax_worker, "torch": torch_worker}[args._worker]  # pylint: disable=protected-access
    result = fn(args)
    with open(args._result, "w") as f:  # pylint: disable=protected-access
      json.dump(result, f)
    return
  argv = [a for a in sys.argv[1:] if not a.startswith("--out")]
  if args.out:
    argv = [a for a in argv if a != args.out]
  results, loads = {}, {}
  for fw in args.frameworks.split(","):
    loads[fw] = load_snapshot()
    print(f"[{fw}] before: {loads[fw]}", flush=True)
    results[fw] = run_worker(__file__, fw, argv)
  flops = results.get("jax", {}).get("flops")
  rows = {fw: summarise(r, args.batch_size, flops, peak_flops(
      r, args.peak_tflops)) for fw, r in results.items()}
  print(f"\nCoDIR train step, B={args.batch_size} T={args.seq_len} "
        f"K={args.num_negatives} N={args.bank_size} P=128, "
        f"{args.threads} cores, {args.steps} timed steps after "
        f"{args.warmup} warm-up\n")
  print("| framework | device | dtype | median s/step | min s/step | "
        "examples/s | GFLOP/s | MFU | setup+compile s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for fw, r in rows.items():
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "n/a (CPU)"
    gfs = f"{r['gflops_per_s']:.0f}" if "gflops_per_s" in r else "n/a"
    print(f"| {fw} | {r['backend']}:{r['device']} | {r['dtype']} | "
          f"{r['median_s']:.3f} | {r['min_s']:.3f} | "
          f"{r['examples_per_s']:.2f} | {gfs} | {mfu} | "
          f"{r['setup_compile_s']:.1f} |")
  summary = {"args": {k: v for k, v in vars(args).items()
                      if not k.startswith("_")},
             "results": rows, "load_before": loads,
             "flops_per_step": flops}
  if "jax" in rows and "torch" in rows:
    ratio = rows["jax"]["examples_per_s"] / rows["torch"]["examples_per_s"]
    summary["jax_over_torch"] = ratio
    best = rows["torch"]["min_s"] / rows["jax"]["min_s"]
    summary["jax_over_torch_min"] = best
    print(f"\nthroughput ratio jax / torch = {ratio:.2f}x from medians, "
          f"{best:.2f}x from the fastest steps "
          f"(target >= 1.2x: {'met' if ratio >= 1.2 else 'MISSED'})")
  if flops:
    print(f"FLOPs per step (XLA cost analysis): {flops / 1e9:.1f} GFLOP")
  print(f"step times: " + "; ".join(
      f"{fw}: " + ", ".join(f"{t:.3f}" for t in r["times"])
      for fw, r in rows.items()))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
