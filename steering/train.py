"""Train a Conditional Language Policy (CLP) and the adapter-based baselines.

    python -m steering train --method clp --algo rsf --out assets/adapters/clp
    python -m steering train --method clp --algo rloo --steps 200 --out runs/clp-rloo
    accelerate launch --num_processes 2 --cpu -m steering train --method clp --algo rloo ...

Methods (what is trained):
- clp: K adapters, one per objective, mixed by w per row and trained jointly on sampled w.
- prompt: one adapter; w is written into the prompt (conditional training / Rewards-in-Context).
- soups: the same K adapters, each trained alone at its corner w = e_k (Rewarded Soups).

Algorithms (how):
- rloo: online REINFORCE with the leave-one-out baseline (Ahmadian et al. 2024) and a KL penalty
  to the frozen base model. Every step samples w ~ Dirichlet(alpha) per prompt, k responses per
  prompt under W(w), scores them, scalarises r_w = w . r_hat and updates all adapters jointly.
- rsf: conditioned rejection-sampling finetuning (the DPA recipe): for each prompt, a pool of N
  candidates; for a sampled w keep the best by w . r_hat and finetune the policy conditioned on w
  to produce it.
- dpo: conditioned direct preference optimisation on the same pool: for a sampled w the best
  candidate by w . r_hat is preferred to the worst, and the policy conditioned on w learns the
  preference against the frozen base model (Rafailov et al. 2023, conditioned on w as in
  Guo et al. 2024's controllable preference optimisation). Unlike rsf it also learns from what
  the weighting rejects.
All rsf and dpo runs pick from the same candidate pool, so they get the same budget of generated
samples.

Every random choice of step s is drawn from a generator seeded with (seed, s, process), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tqdm import tqdm

from steering.errors import UserError
from steering.generate import SampledBatch, encode_prompts, sample_batch, sequence_logprobs
from steering.methods import method_conditioning
from steering.mixing import (
    AdapterMetadata,
    AdapterSpec,
    adapters_off,
    attach,
    bank_parameters,
    conditioned,
    save_bank,
)
from steering.objectives import Calibration, fit_calibration, score
from steering.pareto import sample_dirichlet
from steering.policy import BaseModel, load_base
from steering.pool import Candidate, read_pool, sample_pool, sentence_prefixes
from steering.prompts import TRAIN_PROMPTS, read_prompts

TRAINED_METHODS = ("clp", "prompt", "soups")
ALGOS = ("rloo", "rsf", "dpo")
SELECTIONS = ("zscore", "rank")
SFT_LOSSES = ("sequence", "token")


@dataclass
class TrainConfig:
    method: str = "clp"
    """what to train: clp (K adapters mixed by w, trained jointly), prompt (w written into the
    prompt, one adapter) or soups (each of the K adapters alone at its corner w = e_k)"""
    algo: str = "rsf"
    """rloo (online REINFORCE, leave-one-out baseline, KL penalty), rsf (conditioned
    rejection-sampling finetuning on a candidate pool) or dpo (conditioned preference
    optimisation of the best over the worst candidate of the same pool)"""
    objectives: str = "positivity,conciseness,relevance"
    """comma-separated objective names, in the order the weights refer to"""
    prompts: str = str(TRAIN_PROMPTS)
    """JSONL file of training prompts"""
    limit: int = 0
    """use only the first N prompts (0: all)"""
    out: str = "runs/clp"
    """directory for the trained adapter, its calibration and the metrics log"""
    pool: str = "runs/pool/base.jsonl"
    """base-model candidate pool (JSONL); sampled first if missing; calibrates the objectives"""
    pool_samples: int = 4
    """candidates per prompt in the base-model pool"""
    variant: str = "attn"
    """conditioned layers: attn (q, k, v, o), full (every block linear) or logit (output head)"""
    rank: int = 4
    """LoRA rank r of every adapter"""
    lora_alpha: float = 8.0
    """LoRA alpha; each adapter is scaled by alpha / r"""
    dirichlet_alpha: float = 1.0
    """concentration of the Dirichlet that training weightings are drawn from"""
    lr: float = 1e-3
    """AdamW learning rate of the adapter parameters"""
    steps: int = 100
    """rloo: number of optimisation steps"""
    prompts_per_step: int = 4
    """rloo: prompts per step (each with its own weighting)"""
    samples: int = 4
    """rloo: responses per prompt, k (the leave-one-out baseline needs k >= 2)"""
    beta: float = 0.05
    """rloo: weight of the KL penalty to the frozen base model; dpo: the DPO beta, the strength
    of the implicit KL regularisation to the frozen base model"""
    rounds: int = 1
    """rsf, dpo: rounds; round 1 picks from the base pool, later rounds sample from the policy"""
    weightings_per_prompt: int = 3
    """rsf, dpo: weightings drawn per prompt and round (soups: that many of the K corners
    w = e_k, drawn at random, or all K when it is K or more)"""
    epochs: int = 1
    """rsf, dpo: passes over each round's selected examples"""
    selection: str = "zscore"
    """rsf, dpo: how candidates are compared for a weighting w: zscore (w . r_hat, rewards as
    z-scores under the base-model calibration) or rank (w . each objective's percentile rank
    among the prompt's candidates, so every objective spans the same range whatever its spread)"""
    sft_weight: float = 0.0
    """dpo: weight of the chosen responses' negative log-likelihood (averaged as --sft-loss
    says) added to the DPO loss, which keeps the preferred answers likely while the rejected
    ones are pushed down (the NLL term of Pang et al. 2024's iterative RPO)"""
    sft_loss: str = "sequence"
    """rsf and dpo's --sft-weight term: how a batch's token log-likelihoods are averaged:
    sequence (each target's mean token log-prob, so every target counts alike, however short)
    or token (the mean over all target tokens of the batch, so a long target counts more)"""
    batch_size: int = 16
    """rsf, dpo: examples (dpo: preference pairs) per finetuning step"""
    max_new_tokens: int = 80
    """longest sampled response, in tokens"""
    temperature: float = 0.9
    """sampling temperature for candidate pools (rloo always samples at 1.0 to stay on-policy)"""
    seed: int = 0
    """seed of every random choice"""
    checkpoint_every: int = 20
    """save a checkpoint every N steps (and on Ctrl-C)"""
    resume: bool = False
    """continue from the checkpoint in --out"""
    base_model: str = ""
    """base model path (default: STEERING_BASE_MODEL or the shipped SmolLM2 GGUF)"""
    dtype: str = "auto"
    """base model dtype: auto (bfloat16 where the hardware multiplies it natively, else
    float32), bfloat16 or float32 (adapters always train in float32)"""

    def __post_init__(self):
        if self.method not in TRAINED_METHODS:
            raise UserError(
                f"method {self.method!r} is not trainable; choose one of {', '.join(TRAINED_METHODS)}"
            )
        if self.algo not in ALGOS:
            raise UserError(f"algo {self.algo!r} is unknown; choose one of {', '.join(ALGOS)}")
        if self.algo == "rloo" and self.samples < 2:
            raise UserError(
                "rloo needs at least 2 samples per prompt for the leave-one-out baseline"
            )
        if self.dirichlet_alpha <= 0:
            raise UserError("dirichlet_alpha must be positive")
        if self.selection not in SELECTIONS:
            raise UserError(
                f"selection {self.selection!r} is unknown; choose one of {', '.join(SELECTIONS)}"
            )
        if self.sft_loss not in SFT_LOSSES:
            raise UserError(
                f"sft_loss {self.sft_loss!r} is unknown; choose one of {', '.join(SFT_LOSSES)}"
            )

    @property
    def objective_names(self) -> tuple[str, ...]:
        names = tuple(n.strip() for n in self.objectives.split(",") if n.strip())
        if len(names) < 2:
            raise UserError("give at least two objectives to trade off")
        return names


def field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (shown by `--help`)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr):
            if isinstance(following.value, ast.Constant) and isinstance(following.value.value, str):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def add_config_arguments(parser, cls=TrainConfig) -> None:
    docs = field_docs(cls)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action="store_true", help=docs.get(f.name))
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            parser.add_argument(
                flag,
                type=kind,
                default=f.default,
                help=f"{docs.get(f.name)} (default: {f.default})",
            )


# ---------------------------------------------------------------------------------------------
# Pure pieces (tested against hand-computed values)


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
    averaged over the batch; pi is conditioned on the pair's weighting w, pi_ref is the base."""
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


def step_rng(seed: int, step: int, process: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, process])


def sample_weightings(
    method: str, k: int, n: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Training weightings: Dirichlet(alpha) for clp and prompt; random corners for soups."""
    if method == "soups":
        return np.eye(k)[rng.integers(0, k, size=n)]
    return sample_dirichlet(k, n, alpha, rng)


# ---------------------------------------------------------------------------------------------
# Scoring and calibration


def score_pool(
    candidates: list[Candidate], objectives: tuple[str, ...], cache: Path | None
) -> dict[str, np.ndarray]:
    """Raw scores of every candidate, cached per objective next to the pool."""
    cached: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as stored:
            cached = {
                name: stored[name] for name in stored.files if len(stored[name]) == len(candidates)
            }
    missing = [name for name in objectives if name not in cached]
    if missing:
        prompts = [c.prompt for c in candidates]
        texts = [c.text for c in candidates]
        cached.update(score(missing, prompts, texts))
        if cache is not None:
            np.savez(cache, **cached)
    return {name: cached[name] for name in objectives}


def pool_scores_path(pool: Path) -> Path:
    return pool.with_suffix(".scores.npz")


# ---------------------------------------------------------------------------------------------
# The trainer


@dataclass
class TrainState:
    step: int = 0
    # wall time and command of the training so far: a resumed run adds its own time to the
    # pieces before it and keeps the command that started the run
    seconds: float = 0.0
    command: str = field(default_factory=lambda: "python -m steering " + " ".join(sys.argv[1:]))
    resumes: int = 0


class Trainer:
    """Wires the pieces: model + bank, optimizer, calibration, checkpoints, metrics."""

    def __init__(self, config: TrainConfig, base: BaseModel | None = None):
        from accelerate import Accelerator

        self.config = config
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.base = base or load_base(config.base_model or None, config.dtype)
        self.objectives = config.objective_names
        self.prompts = read_prompts(config.prompts, config.limit or None)
        self.out = Path(config.out)
        self.bank = config.method
        bank_objectives = ("prompt",) if config.method == "prompt" else self.objectives
        self.spec = AdapterSpec(bank_objectives, config.variant, config.rank, config.lora_alpha)
        model = self.base.model
        attach(model, self.bank, self.spec)
        self.parameters = bank_parameters(model, self.bank)
        for p in self.parameters:
            p.requires_grad_(True)
        self.unwrapped = model
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr)
        self.state = TrainState()
        if config.resume:
            self.load_checkpoint()
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self.calibration = self.calibrate()
        self.started = time.time()  # training time: loading the model and the pool are not in it

    # -- conditioning -------------------------------------------------------------------------

    def condition(self, prompts: list[str], weights: np.ndarray):
        w = torch.as_tensor(weights, dtype=torch.float32)
        return method_conditioning(self.config.method, self.bank, self.objectives, prompts, w)

    def base_pool(self) -> tuple[list[Candidate], dict[str, np.ndarray]]:
        pool = Path(self.config.pool)
        if self.accelerator.is_main_process:
            with adapters_off(self.unwrapped):
                sample_pool(
                    self.unwrapped,
                    self.base.tokenizer,
                    self.prompts,
                    pool,
                    samples=self.config.pool_samples,
                    max_new_tokens=self.config.max_new_tokens,
                    temperature=self.config.temperature,
                    seed=self.config.seed,
                )
        self.accelerator.wait_for_everyone()
        wanted = set(self.prompts)
        candidates = read_pool(pool)
        raw = score_pool(candidates, self.objectives, pool_scores_path(pool))
        keep = np.array([c.prompt in wanted for c in candidates])
        return [c for c, k in zip(candidates, keep, strict=True) if k], {
            n: v[keep] for n, v in raw.items()
        }

    def calibrate(self) -> Calibration:
        """Normalisation statistics from base-model samples on the training prompts."""
        self.base_candidates, self.base_raw = self.base_pool()
        return fit_calibration(self.base_raw)

    def normalised(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        r_hat = self.calibration.normalise(raw)
        return np.stack([r_hat[name] for name in self.objectives], axis=1)  # (N, K)

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def save_checkpoint(self) -> None:
        if not self.accelerator.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "step": self.state.step,
            "seconds": self.elapsed(),
            "command": self.state.command,
            "resumes": self.state.resumes,
            "parameters": [p.detach().clone() for p in self.parameters],
            "optimizer": self.optimizer.state_dict(),
            "config": asdict(self.config),
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.checkpoint_path)  # atomic: a crash never leaves half a checkpoint

    def load_checkpoint(self) -> None:
        if not self.checkpoint_path.exists():
            raise UserError(f"no checkpoint to resume in {self.out}")
        payload = torch.load(self.checkpoint_path, weights_only=False)
        with torch.no_grad():
            for p, saved in zip(self.parameters, payload["parameters"], strict=True):
                p.copy_(saved)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state.step = payload["step"]
        self.state.seconds = payload.get("seconds", 0.0)
        self.state.command = payload.get("command", self.state.command)
        self.state.resumes = payload.get("resumes", 0) + 1
        self.drop_metrics_after(self.state.step)

    def elapsed(self) -> float:
        """Seconds of training up to now, over every piece of a resumed run."""
        return self.state.seconds + time.time() - self.started

    def drop_metrics_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps the resumed run will log again:
        keep the log's lines up to the checkpoint, so every step appears once."""
        path = self.out / "metrics.jsonl"
        if not self.accelerator.is_main_process or not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def log(self, metrics: dict) -> None:
        if self.accelerator.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            with (self.out / "metrics.jsonl").open("a") as handle:
                handle.write(json.dumps(metrics) + "\n")

    def mean_across_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        values = torch.tensor(list(metrics.values()), dtype=torch.float64)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(metrics, values.tolist(), strict=True))

    # -- one optimisation step ----------------------------------------------------------------

    def apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad()
        self.accelerator.backward(loss)
        self.optimizer.step()

    def rloo_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        rng = step_rng(cfg.seed, step, self.accelerator.process_index)
        chosen = rng.choice(
            len(self.prompts), size=min(cfg.prompts_per_step, len(self.prompts)), replace=False
        )
        weights = sample_weightings(
            cfg.method, len(self.objectives), len(chosen), cfg.dirichlet_alpha, rng
        )
        prompts = [self.prompts[i] for i in chosen for _ in range(cfg.samples)]
        w_rows = np.repeat(weights, cfg.samples, axis=0)  # (P*k, K)
        model_prompts, conditioning = self.condition(prompts, w_rows)
        batch = sample_batch(
            self.unwrapped,
            self.base.tokenizer,
            model_prompts,
            conditioning,
            max_new_tokens=cfg.max_new_tokens,
            temperature=1.0,
            top_p=1.0,
            seed=int(rng.integers(2**31)),
        )
        texts = decode_responses(self.base.tokenizer, batch)
        r_hat = self.normalised(score(self.objectives, prompts, texts))  # (P*k, K)
        w = torch.as_tensor(w_rows, dtype=torch.float32)
        reward = scalarise(w, torch.as_tensor(r_hat, dtype=torch.float32))  # (P*k,)
        args = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
        with torch.no_grad(), adapters_off(self.unwrapped):
            ref = sequence_logprobs(self.unwrapped, *args)  # (P*k, T)
        with conditioned(self.unwrapped, self.bank, conditioning.weights):
            logprobs = sequence_logprobs(self.model, *args)  # (P*k, T)
        kl = sequence_kl(logprobs.detach(), ref, batch.response_mask)  # (P*k,)
        total = reward - cfg.beta * kl  # R = r_w - beta * KL
        advantages = rloo_advantages(total.view(-1, cfg.samples)).flatten()  # (P*k,)
        # REINFORCE: grad E[R] = E[A * grad log pi(y|x, w)], log pi summed over response tokens
        loss = -(advantages * logprobs.sum(dim=-1)).mean()
        self.apply(loss)
        metrics = {f"rewards/{n}": float(r_hat[:, i].mean()) for i, n in enumerate(self.objectives)}
        metrics.update(
            {
                "rewards/scalarised": float(reward.mean()),
                "losses/kl": float(kl.mean()),
                "losses/policy": float(loss.detach()),
                "lengths/tokens": float(batch.response_mask.sum(dim=1).float().mean()),
            }
        )
        return metrics

    def encode_examples(self, prompts: list[str], w: np.ndarray, targets: list[str], ended):
        """(prompt ids, prompt mask, target ids, target mask) and the conditioning for w."""
        tok = self.base.tokenizer
        model_prompts, conditioning = self.condition(prompts, w)
        context = getattr(self.unwrapped.config, "max_position_embeddings", 2048)
        width = self.config.max_new_tokens + 1
        prompt_ids, prompt_mask = encode_prompts(tok, model_prompts, width, context)
        target_ids, target_mask = encode_targets(tok, targets, ended, width)
        return (prompt_ids, prompt_mask, target_ids, target_mask), conditioning

    def sft_step(self, examples: list[tuple]) -> dict[str, float]:
        """Finetune on (prompt, target, w, ended, ...): maximise log pi(target | prompt, w)."""
        w = np.stack([e[2] for e in examples])
        args, conditioning = self.encode_examples(
            [e[0] for e in examples], w, [e[1] for e in examples], [e[3] for e in examples]
        )
        with conditioned(self.unwrapped, self.bank, conditioning.weights):
            logprobs = sequence_logprobs(self.model, *args)
        loss = sft_loss(logprobs, args[3], self.config.sft_loss)
        self.apply(loss)
        return {
            "losses/sft": float(loss.detach()),
            "lengths/tokens": float(args[3].sum(dim=1).float().mean()),
        }

    def dpo_step(self, examples: list[tuple]) -> dict[str, float]:
        """Preference step on (prompt, chosen, w, chosen ended, rejected, rejected ended): the
        chosen and rejected responses of a batch go through the model together."""
        n = len(examples)
        prompts = [e[0] for e in examples] * 2
        w = np.concatenate([np.stack([e[2] for e in examples])] * 2)
        targets = [e[1] for e in examples] + [e[4] for e in examples]
        ended = [e[3] for e in examples] + [e[5] for e in examples]
        args, conditioning = self.encode_examples(prompts, w, targets, ended)
        with torch.no_grad(), adapters_off(self.unwrapped):
            ref = sequence_logprobs(self.unwrapped, *args).sum(dim=-1)  # (2n,)
        with conditioned(self.unwrapped, self.bank, conditioning.weights):
            token_logprobs = sequence_logprobs(self.model, *args)  # (2n, T)
        logprobs = token_logprobs.sum(dim=-1)  # (2n,)
        preference = dpo_loss(logprobs[:n], logprobs[n:], ref[:n], ref[n:], self.config.beta)
        nll = sft_loss(token_logprobs[:n], args[3][:n], self.config.sft_loss)
        self.apply(preference + self.config.sft_weight * nll)
        margin = ((logprobs[:n] - ref[:n]) - (logprobs[n:] - ref[n:])).detach()
        return {
            "losses/dpo": float(preference.detach()),
            "losses/sft": float(nll.detach()),
            "rewards/margin": float(self.config.beta * margin.mean()),
            "rewards/accuracy": float((margin > 0).float().mean()),
            "lengths/tokens": float(args[3][:n].sum(dim=1).float().mean()),
        }

    # -- rejection sampling ---------------------------------------------------------------------

    def round_pool(self, round_index: int) -> tuple[list[Candidate], np.ndarray]:
        """Round 1: the base pool. Later rounds: candidates from the policy at sampled w.
        Either way every response also offers its sentence prefixes as candidates."""
        cfg = self.config
        if round_index == 0:
            path, candidates = Path(cfg.pool), self.base_candidates
        else:
            path = self.out / f"pool-round{round_index + 1}.jsonl"
            k = len(self.objectives)

            def conditioning_for(batch_prompts):
                rng = step_rng(
                    cfg.seed, 10_000 * round_index + self.prompts.index(batch_prompts[0])
                )
                weights = sample_weightings(
                    cfg.method, k, len(batch_prompts), cfg.dirichlet_alpha, rng
                )
                return self.condition(batch_prompts, weights)

            if self.accelerator.is_main_process:
                sample_pool(
                    self.unwrapped,
                    self.base.tokenizer,
                    self.prompts,
                    path,
                    samples=cfg.pool_samples,
                    conditioning_for=conditioning_for,
                    max_new_tokens=cfg.max_new_tokens,
                    temperature=cfg.temperature,
                    seed=cfg.seed + round_index,
                )
            self.accelerator.wait_for_everyone()
            wanted = set(self.prompts)
            candidates = [c for c in read_pool(path) if c.prompt in wanted]
        expanded = candidates + [p for c in candidates for p in sentence_prefixes(c)]
        cache = path.with_suffix(f".{len(self.prompts)}-prompts.expanded.scores.npz")
        return expanded, self.normalised(score_pool(expanded, self.objectives, cache))

    def select(
        self, candidates: list[Candidate], r_hat: np.ndarray, round_index: int
    ) -> list[tuple]:
        """For each prompt and weighting w, the candidate maximising w . r_hat (DPA's selection):
        (prompt, best text, w, best ended); dpo appends the candidate minimising it (its text and
        ended) as the rejected response."""
        cfg = self.config
        k = len(self.objectives)
        by_prompt: dict[str, list[int]] = {}
        for i, c in enumerate(candidates):
            by_prompt.setdefault(c.prompt, []).append(i)
        examples = []
        for p_index, prompt in enumerate(self.prompts):
            rows = by_prompt.get(prompt)
            if not rows:
                continue
            rng = step_rng(cfg.seed, 100_000 + 1_000 * round_index + p_index)
            if cfg.method == "soups":
                weightings = np.eye(k)
                if cfg.weightings_per_prompt < k:
                    weightings = weightings[rng.choice(k, cfg.weightings_per_prompt, replace=False)]
            else:
                weightings = sample_dirichlet(
                    k, cfg.weightings_per_prompt, cfg.dirichlet_alpha, rng
                )
            compared = percentile_ranks(r_hat[rows]) if cfg.selection == "rank" else r_hat[rows]
            for w in weightings:
                scores = compared @ w
                best = candidates[rows[int(np.argmax(scores))]]
                example = (prompt, best.text, w, best.ended)
                if cfg.algo == "dpo":
                    worst = candidates[rows[int(np.argmin(scores))]]
                    example += (worst.text, worst.ended)
                examples.append(example)
        return examples

    # -- the loops ------------------------------------------------------------------------------

    def rsf_schedule(self) -> list[tuple[int, int, int]]:
        """(round, epoch, batch) per global step, with the number of examples per round fixed
        by the selection, so a resumed run can find where it was."""
        schedule = []
        per_prompt = self.config.weightings_per_prompt
        if self.config.method == "soups":
            per_prompt = min(per_prompt, len(self.objectives))
        examples = len(self.prompts) * per_prompt
        per_epoch = -(-examples // self.config.batch_size)
        for r in range(self.config.rounds):
            for e in range(self.config.epochs):
                schedule.extend((r, e, b) for b in range(per_epoch))
        return schedule

    def run(self) -> Path:
        try:
            if self.config.algo == "rloo":
                self.run_rloo()
            else:
                self.run_rsf()
        except KeyboardInterrupt:
            self.save_checkpoint()
            print(
                f"interrupted at step {self.state.step}; checkpoint saved, continue with --resume",
                file=sys.stderr,
            )
            raise SystemExit(130) from None
        self.save_checkpoint()
        return self.finish()

    def run_rloo(self) -> None:
        cfg = self.config
        bar = tqdm(
            total=cfg.steps,
            initial=self.state.step,
            desc=f"rloo {cfg.method}",
            disable=not self.accelerator.is_main_process,
        )
        while self.state.step < cfg.steps:
            metrics = self.mean_across_processes(self.rloo_step(self.state.step))
            self.state.step += 1
            self.log({"step": self.state.step, **metrics})
            bar.update(1)
            bar.set_postfix(
                reward=f"{metrics['rewards/scalarised']:.3f}", kl=f"{metrics['losses/kl']:.3f}"
            )
            if self.state.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()

    def run_rsf(self) -> None:
        """The pool-based loop of rsf and dpo: select from each round's pool, then finetune."""
        cfg = self.config
        step, loss_name = (
            (self.dpo_step, "losses/dpo") if cfg.algo == "dpo" else (self.sft_step, "losses/sft")
        )
        schedule = self.rsf_schedule()
        bar = tqdm(
            total=len(schedule),
            initial=self.state.step,
            desc=f"{cfg.algo} {cfg.method}",
            disable=not self.accelerator.is_main_process,
        )
        examples: list = []
        current_round = -1
        while self.state.step < len(schedule):
            round_index, epoch, batch_index = schedule[self.state.step]
            if round_index != current_round:
                candidates, r_hat = self.round_pool(round_index)
                examples = self.select(candidates, r_hat, round_index)
                current_round = round_index
            order = step_rng(cfg.seed, 200_000 + 1_000 * round_index + epoch).permutation(
                len(examples)
            )
            shard = order[batch_index * cfg.batch_size : (batch_index + 1) * cfg.batch_size]
            shard = shard[self.accelerator.process_index :: self.accelerator.num_processes]
            metrics = self.mean_across_processes(step([examples[i] for i in shard]))
            self.state.step += 1
            self.log(
                {"step": self.state.step, "round": round_index + 1, "epoch": epoch + 1, **metrics}
            )
            bar.update(1)
            bar.set_postfix(loss=f"{metrics[loss_name]:.3f}")
            if self.state.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()

    def finish(self) -> Path:
        if self.accelerator.is_main_process:
            training = {
                **asdict(self.config),
                "objectives": list(self.objectives),
                "steps_done": self.state.step,
                "seconds": round(self.elapsed(), 1),
                "command": self.state.command,
                "resumes": self.state.resumes,
            }
            save_bank(
                self.unwrapped,
                self.bank,
                self.out,
                AdapterMetadata(self.spec, self.base.identity, training),
            )
            self.calibration.save(self.out)
        self.accelerator.wait_for_everyone()
        for p in self.parameters:
            p.requires_grad_(False)
        return self.out


def decode_responses(tokenizer, batch: SampledBatch) -> list[str]:
    texts = []
    for ids, mask in zip(batch.response_ids, batch.response_mask, strict=True):
        kept = [int(t) for t, m in zip(ids, mask, strict=True) if m]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts


def encode_targets(
    tokenizer, texts: list[str], ended: list[bool], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded target ids. A complete answer ends with the end-of-turn token, so the policy
    learns where to stop (which is what brevity is made of); one the token limit cut off does
    not, so the policy never learns to stop mid-sentence."""
    rows = []
    for text, complete in zip(texts, ended, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1]
        rows.append(ids + [tokenizer.eos_token_id] if complete else ids)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def train(config: TrainConfig, base: BaseModel | None = None) -> Path:
    return Trainer(config, base).run()
