"""codir_jax.losses: pure loss functions and the memory bank of CoDIR.

Sun et al., "Contrastive Distillation on Intermediate Representations for
Language Model Compression", EMNLP 2020. ../shared/METHOD.md is the source
of truth for every choice ("paper" = default, "released code" = variant).

Shape alphabet (the one of METHOD.md and API.md, used in every docstring;
STYLE.md's draft alphabet used other letters for layers/bank and is
superseded by API.md):
  B batch      T tokens       D hidden size    L layers used (stacked)
  P projection size           K negatives per example
  N memory-bank slots (one per training example in fine-tuning)
  C classes    V vocabulary

Conventions: keyword-only options, float32 math inside, per-example
(unreduced) outputs, boolean masks with True = keep/valid, reductions via
`masked_sum_count`.

Equation -> function (exactly one each):
| formula (METHOD.md / paper)                              | function                            |
|----------------------------------------------------------|-------------------------------------|
| h_l = masked mean_t hidden_l (paper pooling)             | representations.masked_mean_pool    |
| h_l = hidden_l[:, 0] (released-code pooling)             | representations.first_token_pool    |
| teacher layer of student layer j (s*j / s*(j-1)+1)       | representations.teacher_layer_map   |
| [h_l1..h_lL] stacked [B, L, D]                           | representations.stack_pooled_layers |
| concat_l h_l [B, L*D]                                    | representations.concat_layers       |
| x / max(||x||, eps)                                      | representations.l2_normalize        |
| x W + b (projection head)                                | representations.project             |
| x_l W_l + b_l (one head per layer, ablation)             | representations.project_per_layer   |
| z = normalize(concat_l pool(h_l) W + b)                  | representations.codir_representation|
| InfoNCE -log softmax([pos, K negs]/tau)_0 (paper)        | contrastive.info_nce                |
| InfoNCE with in-batch negatives (paper, pre-training)    | contrastive.in_batch_info_nce       |
| CRD NCE, Eq. 18 (released code)                          | contrastive.crd_nce                 |
| Z = mean(exp(l)) * N on the first batch (released code)  | contrastive.crd_log_z (returns logZ)|
| negative label rule (y_j != y_i; |y_j - y_i| > gap)      | contrastive.label_eligible          |
| rho^2 KL(softmax(t/rho) || softmax(s/rho))               | distill.kd_loss                     |
| CE(y, z_s)                                               | distill.cross_entropy               |
| MSE(s, y) and KD -> MSE(s, t) (regression)               | distill.mse                         |
| PKD L2: MSE of normalised pooled mapped layers           | distill.pkd_loss                    |
| M ~ U(-s, s), s = 1/sqrt(P/3)                            | memory_bank.init                    |
| M[i] <- normalize(m M[i] + (1-m) z_i)                    | memory_bank.write                   |
| FIFO queue (pre-training extension)                      | memory_bank.write_fifo              |
| positive = M[i] (released code)                          | memory_bank.read                    |
| K negatives ~ U{eligible slots}                          | memory_bank.sample_negatives        |
| InfoNCE against sharded bank negatives                   | bank_losses.bank_info_nce           |
| CRD NCE against sharded bank negatives                   | bank_losses.bank_crd_nce            |
| Z of CRD NCE from bank negatives                         | bank_losses.bank_crd_log_z          |
| (sum, count) of per-example values                       | reductions.masked_sum_count         |
L_crd = (L_s + L_t) / 2 and the total objective are weighted sums in
train/step.py (STYLE.md sec. 5), not functions here.
"""

from codir_jax.losses import bank_losses
from codir_jax.losses import contrastive
from codir_jax.losses import distill
from codir_jax.losses import memory_bank
from codir_jax.losses import reductions
from codir_jax.losses import representations
from codir_jax.losses.contrastive import crd_log_z
from codir_jax.losses.contrastive import crd_nce
from codir_jax.losses.contrastive import crd_nce_from_logits
from codir_jax.losses.contrastive import in_batch_info_nce
from codir_jax.losses.contrastive import info_nce
from codir_jax.losses.contrastive import info_nce_from_logits
from codir_jax.losses.contrastive import label_eligible
from codir_jax.losses.distill import cross_entropy
from codir_jax.losses.distill import kd_loss
from codir_jax.losses.distill import mse
from codir_jax.losses.distill import pkd_loss
from codir_jax.losses.bank_losses import bank_crd_log_z
from codir_jax.losses.bank_losses import bank_crd_nce
from codir_jax.losses.bank_losses import bank_info_nce
from codir_jax.losses.memory_bank import MemoryBank
from codir_jax.losses.reductions import masked_mean
from codir_jax.losses.reductions import masked_sum_count
from codir_jax.losses.representations import check_layer_ids
from codir_jax.losses.representations import codir_representation
from codir_jax.losses.representations import concat_layers
from codir_jax.losses.representations import first_token_pool
from codir_jax.losses.representations import get_pooling
from codir_jax.losses.representations import l2_normalize
from codir_jax.losses.representations import masked_mean_pool
from codir_jax.losses.representations import project
from codir_jax.losses.representations import project_per_layer
from codir_jax.losses.representations import stack_pooled_layers
from codir_jax.losses.representations import student_layer_ids
from codir_jax.losses.representations import teacher_layer_map

__all__ = [
    "MemoryBank",
    "bank_losses",
    "bank_crd_log_z",
    "bank_crd_nce",
    "bank_info_nce",
    "check_layer_ids",
    "codir_representation",
    "concat_layers",
    "contrastive",
    "crd_log_z",
    "crd_nce",
    "crd_nce_from_logits",
    "cross_entropy",
    "distill",
    "first_token_pool",
    "get_pooling",
    "in_batch_info_nce",
    "info_nce",
    "info_nce_from_logits",
    "kd_loss",
    "l2_normalize",
    "label_eligible",
    "masked_mean",
    "masked_mean_pool",
    "masked_sum_count",
    "memory_bank",
    "mse",
    "pkd_loss",
    "project",
    "project_per_layer",
    "reductions",
    "representations",
    "stack_pooled_layers",
    "student_layer_ids",
    "teacher_layer_map",
]
