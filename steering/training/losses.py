"""The pure pieces of the training objectives: selection ranks, the finetuning and preference
losses, scalarisation, the leave-one-out advantages and the KL estimate (each tested against
hand-computed values)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def percentile_ranks(rewards: np.ndarray) -> np.ndarray:
    """(N, K) rewards -> (N, K) ranks scaled to [0, 1] per column (ties share their mean rank;
    a single candidate gets 0.5): the best candidate on objective k scores 1 on it, the worst 0.
    """
    n = rewards.shape[0]
    if n == 1:
        return np.full_like(rewards, 0.5, dtype=np.float64)
    return (rankdata(rewards, axis=0) - 1) / (n - 1)


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Negative log-likelihood of (B, T) target-token log-probs (zero where masked), averaged
    per target then over the batch (`sequence`) or over every target token at once (`token`)."""
    if mode == "token":
        return -logprobs.sum() / mask.sum()
    return -(logprobs.sum(dim=-1) / mask.sum(dim=-1)).mean()


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7) on per-sequence log-probs (B,):
        L = -log sigmoid(beta * [(log pi(y+) - log pi_ref(y+)) - (log pi(y-) - log pi_ref(y-))]),
    averaged over the batch; pi is conditioned on the pair's weighting w, pi_ref is the reference
    (`steering.training.reference`)."""
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


def scalarise(weights: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """r_w = sum_k w_k r_hat_k per row: (N, K), (N, K) -> (N,)."""
    return (weights * rewards).sum(dim=-1)


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out advantages for (P, k) rewards, k samples per prompt.

    RLOO (Ahmadian et al. 2024, eq. 5; Kool et al. 2019): the baseline of sample i is the mean
    reward of the other k - 1 samples of the same prompt,
        A_i = R_i - 1/(k-1) sum_{j != i} R_j = k/(k-1) * (R_i - mean_j R_j).
    """
    k = rewards.shape[1]
    return k / (k - 1) * (rewards - rewards.mean(dim=1, keepdim=True))


def sequence_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Sampled estimate of KL(pi || pi_ref) per sequence: sum_t (log pi - log pi_ref) over the
    response tokens (the k1 estimator of Schulman 2020, as in the RLHF objective of Ziegler et
    al. 2019: R = r - beta * KL)."""
    return ((logprobs - ref_logprobs) * mask).sum(dim=-1)
