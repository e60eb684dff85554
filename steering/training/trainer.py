"""Train a Conditional Language Policy (CLP) and the adapter-based baselines.

    python -m steering train --method clp --algo rsf --out assets/adapters/clp
    python -m steering train --method clp --algo rloo --steps 200 --out runs/clp-rloo
    python -m steering train --method clp --algo online-dpo --rounds 100 --out runs/clp-online
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
  preference against the frozen base model (Rafailov et al. 2023, conditioned on w as in Guo et
  al. 2024's controllable preference optimisation), also learning from what w rejects.
- online-dpo (`online`): the dpo step on the policy's own samples, round after round: k responses
  per prompt and w, the best by w . r_hat that clears the quality floor (--min-words) preferred
  to the worst (--reference init: against the --init-from adapters instead of the base model);
  --updates-per-round steps, then the next round samples from the updated policy (--sampler
  llamacpp: on llama.cpp in a second process, one round behind, while this one trains).
All rsf and dpo runs pick from the same candidate pool: the same budget of generated samples.

Every random choice of step s is drawn from a generator seeded with (seed, s, process), so a run
resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from steering.errors import UserError
from steering.model.generate import (
    batch_texts,
    encode_prompts,
    encode_targets,
    sample_batch,
    sequence_logprobs,
    stop_token_ids,
)
from steering.model.methods import method_conditioning
from steering.model.mixing import (
    AdapterMetadata,
    AdapterSpec,
    adapters_off,
    attach,
    bank_parameters,
    conditioned,
    save_bank,
)
from steering.model.policy import BaseModel, load_base
from steering.objectives import Calibration, fit_calibration, load_calibration
from steering.objectives.declared import SPECS_KEY
from steering.prompts import read_prompts
from steering.training.averaging import ParameterAverage
from steering.training.config import TrainConfig
from steering.training.losses import (
    dpo_loss,
    percentile_ranks,
    rloo_advantages,
    scalarise,
    sequence_kl,
    sft_loss,
)
from steering.training.pool import Candidate, read_pool, sample_pool, sentence_prefixes
from steering.training.records import (
    PolicySamples,
    PreferencePair,
    SampleRequest,
    SftExample,
    sample_request,
    sample_weightings,
    weighting_count,
)
from steering.training.reference import reference_logprobs
from steering.training.schedule import learning_rate
from steering.training.scoring import pool_scores_path, score_pool
from steering.training.state import TrainState, resumed_command


def step_rng(seed: int, step: int, process: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, step, process])


class Trainer:
    """Wires the pieces: model + bank, optimizer, calibration, checkpoints, metrics."""

    def __init__(self, config: TrainConfig, base: BaseModel | None = None):
        from accelerate import Accelerator

        self.config = config
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.base = base or load_base(config.base_model or None, config.dtype)
        self.objective_set = config.objective_set()
        self.objectives = self.objective_set.names
        self.prompts = read_prompts(config.prompts, config.limit or None)
        self.out = Path(config.out)
        self.bank = config.method
        bank_objectives = ("prompt",) if config.method == "prompt" else self.objectives
        self.spec = AdapterSpec(
            bank_objectives,
            config.variant,
            config.rank,
            config.lora_alpha,
            config.target_module_names,
        )
        model = self.base.model
        attach(model, self.bank, self.spec)
        self.parameters = bank_parameters(model, self.bank)
        for p in self.parameters:
            p.requires_grad_(True)
        self.unwrapped = model
        self.optimizer = torch.optim.AdamW(self.parameters, lr=config.lr)
        self.average = ParameterAverage(self.parameters, config.ema_decay)
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
        raw = score_pool(candidates, self.objective_set, pool_scores_path(pool))
        keep = np.array([c.prompt in wanted for c in candidates])
        return [c for c, k in zip(candidates, keep, strict=True) if k], {
            n: v[keep] for n, v in raw.items()
        }

    def calibrate(self) -> Calibration:
        """Normalisation statistics from base-model samples on the training prompts; an
        online-dpo run started --init-from saved adapters keeps their calibration instead when it
        covers the run's objectives, so it needs no base pool and its rewards are on the scale
        the adapters were trained and evaluated on."""
        if self.config.algo == "online-dpo" and self.config.init_from:
            calibration = load_calibration(self.config.init_from)
            if set(calibration.objectives) == set(self.objectives):
                self.base_candidates, self.base_raw = [], {}
                return calibration
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
            "average": self.average.state(),
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
        self.average.load(payload.get("average"))
        self.state.step = payload["step"]
        self.state.seconds = payload.get("seconds", 0.0)
        self.state.command = resumed_command(payload.get("command"), self.state.command)
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
        cfg = self.config
        rate = learning_rate(cfg.lr, cfg.lr_schedule, self.state.step, self.total_steps())
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.optimizer.step()
        self.average.update()

    def sample_responses(self, rng: np.random.Generator, temperature: float) -> PolicySamples:
        """k (--samples) responses from the policy to each of --prompts-per-step prompts, each
        prompt at its own weighting, all drawn from rng."""
        request = sample_request(self.config, self.prompts, len(self.objectives), rng)
        return self.sample_rows(request, temperature)

    def sample_rows(
        self, request: SampleRequest, temperature: float, bank: str | None = None
    ) -> PolicySamples:
        """The responses to a request's rows, each at its weighting: from the policy, or from
        another `bank` attached to the model (--reference init's), conditioned the same way."""
        model_prompts, conditioning = self.condition(request.prompts, request.weights)
        if bank is not None:
            conditioning = replace(conditioning, bank=bank)
        batch = sample_batch(
            self.unwrapped,
            self.base.tokenizer,
            model_prompts,
            conditioning,
            max_new_tokens=self.config.max_new_tokens,
            temperature=temperature,
            top_p=1.0,
            seed=request.seed,
            min_words=self.config.sample_min_words,
        )
        stops = stop_token_ids(self.unwrapped, self.base.tokenizer)
        # (P*k,) a stop token came before the token limit (padding only ever follows one)
        ended = torch.isin(batch.response_ids, torch.tensor(sorted(stops))).any(dim=1)
        texts = batch_texts(self.base.tokenizer, batch, stops)
        return PolicySamples(
            request.prompts, request.weights, conditioning, batch, texts, ended.tolist()
        )

    def rloo_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        rng = step_rng(cfg.seed, step, self.accelerator.process_index)
        sampled = self.sample_responses(rng, temperature=1.0)
        prompts, texts, batch = sampled.prompts, sampled.texts, sampled.batch
        r_hat = self.normalised(self.objective_set.score(prompts, texts))  # (P*k, K)
        w = torch.as_tensor(sampled.weights, dtype=torch.float32)
        reward = scalarise(w, torch.as_tensor(r_hat, dtype=torch.float32))  # (P*k,)
        args = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
        with torch.no_grad(), adapters_off(self.unwrapped):
            ref = sequence_logprobs(self.unwrapped, *args)  # (P*k, T)
        with conditioned(self.unwrapped, self.bank, sampled.conditioning.weights):
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

    def sft_step(self, examples: list[SftExample]) -> dict[str, float]:
        """Finetune on the examples: maximise log pi(target | prompt, w)."""
        w = np.stack([e.weights for e in examples])
        args, conditioning = self.encode_examples(
            [e.prompt for e in examples],
            w,
            [e.target for e in examples],
            [e.ended for e in examples],
        )
        with conditioned(self.unwrapped, self.bank, conditioning.weights):
            logprobs = sequence_logprobs(self.model, *args)
        loss = sft_loss(logprobs, args[3], self.config.sft_loss)
        self.apply(loss)
        return {
            "losses/sft": float(loss.detach()),
            "lengths/tokens": float(args[3].sum(dim=1).float().mean()),
        }

    def dpo_step(self, examples: list[PreferencePair]) -> dict[str, float]:
        """Preference step on the pairs: the chosen and rejected responses of a batch go through
        the model together."""
        n = len(examples)
        prompts = [e.prompt for e in examples] * 2
        w = np.concatenate([np.stack([e.weights for e in examples])] * 2)
        targets = [e.chosen for e in examples] + [e.rejected for e in examples]
        ended = [e.chosen_ended for e in examples] + [e.rejected_ended for e in examples]
        args, conditioning = self.encode_examples(prompts, w, targets, ended)
        ref = reference_logprobs(self.unwrapped, self.config.reference, conditioning.weights, args)
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
                    cfg.method,
                    k,
                    len(batch_prompts),
                    cfg.dirichlet_alpha,
                    rng,
                    corner_share=cfg.corner_share,
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
        return expanded, self.normalised(score_pool(expanded, self.objective_set, cache))

    def select(
        self, candidates: list[Candidate], r_hat: np.ndarray, round_index: int
    ) -> list[SftExample] | list[PreferencePair]:
        """For each prompt and weighting w, the candidate maximising w . r_hat (DPA's selection)
        as an `SftExample`; dpo pairs it with the candidate minimising it, the rejected response
        of a `PreferencePair`."""
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
            weightings = sample_weightings(
                cfg.method,
                k,
                cfg.weightings_per_prompt,
                cfg.dirichlet_alpha,
                rng,
                distinct_corners=True,
                corner_share=cfg.corner_share,
            )
            compared = percentile_ranks(r_hat[rows]) if cfg.selection == "rank" else r_hat[rows]
            for w in weightings:
                scores = compared @ w
                best = candidates[rows[int(np.argmax(scores))]]
                weights = tuple(w.tolist())
                if cfg.algo == "dpo":
                    worst = candidates[rows[int(np.argmin(scores))]]
                    examples.append(
                        PreferencePair(
                            prompt, best.text, best.ended, worst.text, worst.ended, weights
                        )
                    )
                else:
                    examples.append(SftExample(prompt, best.text, weights, best.ended))
        return examples

    # -- the loops ------------------------------------------------------------------------------

    def total_steps(self) -> int:
        """The run's optimiser steps, the length --lr-schedule spreads over."""
        cfg = self.config
        if cfg.algo == "online-dpo":
            return cfg.rounds * cfg.updates_per_round
        return cfg.steps if cfg.algo == "rloo" else len(self.rsf_schedule())

    def rsf_schedule(self) -> list[tuple[int, int, int]]:
        """(round, epoch, batch) per global step, with the number of examples per round fixed
        by the selection, so a resumed run can find where it was."""
        schedule = []
        per_prompt = weighting_count(
            self.config.method,
            len(self.objectives),
            self.config.weightings_per_prompt,
            distinct_corners=True,
        )
        examples = len(self.prompts) * per_prompt
        per_epoch = -(-examples // self.config.batch_size)
        for r in range(self.config.rounds):
            for e in range(self.config.epochs):
                schedule.extend((r, e, b) for b in range(per_epoch))
        return schedule

    def run(self, sampler=None) -> Path:
        """Train and save; `sampler` is where online-dpo's rounds come from (an
        `online.RoundSampler`; default: the trainer's own policy)."""
        try:
            if self.config.algo == "rloo":
                self.run_rloo()
            elif self.config.algo == "online-dpo":
                from steering.training.online import run_online  # it imports this module

                run_online(self, sampler)
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
        examples: list[SftExample] | list[PreferencePair] = []
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
        self.average.copy_to_parameters()
        if self.accelerator.is_main_process:
            training = {
                **asdict(self.config),
                "objectives": list(self.objectives),
                SPECS_KEY: self.objective_set.to_json(),
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


def train(config: TrainConfig, base: BaseModel | None = None) -> Path:
    return Trainer(config, base).run()
