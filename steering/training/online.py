"""Online conditioned DPO (`--algo online-dpo`): preference optimisation on the policy's own
samples, round after round.

Round r:
1. draw --prompts-per-step prompts and a weighting w for each (`sample_weightings`: Dirichlet
   rows for clp and prompt, corners w = e_k for soups), from a generator seeded with
   (seed, r, process);
2. the current policy, conditioned on w as the method says (`method_conditioning`), samples
   k = --samples responses per prompt;
3. the objectives score them, normalised with the base-model calibration (r_hat);
4. per prompt, the best sample by w . r_hat (--selection rank: by w . each objective's percentile
   rank among the k) that clears the quality floor (`floor.degenerate`) is preferred to the worst
   sample of all: one `PreferencePair` per prompt;
5. --updates-per-round conditioned DPO steps (`Trainer.dpo_step`, with the --sft-weight NLL of
   the chosen answers) on the round's pairs update all adapters jointly.
The next round samples from the updated policy. --init-from starts from trained adapters instead
of fresh ones; the DPO reference stays the frozen base model either way.

Each round's samples, rewards, pairs and measurements are written to OUT/rounds/ before its
updates: a run resumed in the middle of a round trains on the pairs the interrupted run sampled,
so it continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from steering.errors import UserError
from steering.model.generate import sequence_logprobs
from steering.model.mixing import (
    AdapterSpec,
    adapters_off,
    check_base_model,
    conditioned,
    fill_bank,
    read_metadata,
)
from steering.objectives import score
from steering.training.floor import degenerate
from steering.training.losses import percentile_ranks, scalarise, sequence_kl
from steering.training.pool import Candidate
from steering.training.records import PreferencePair
from steering.training.trainer import Trainer, step_rng

ROUNDS_DIR = "rounds"


@dataclass(frozen=True)
class OnlineRound:
    """One round: the policy's samples, their normalised rewards, the pairs they formed (in the
    order the round's updates take them) and what was measured on the samples."""

    index: int
    samples: list[Candidate]
    r_hat: np.ndarray  # (P*k, K)
    pairs: list[PreferencePair]
    metrics: dict[str, float]

    def to_json(self) -> dict:
        return {
            "round": self.index + 1,
            "metrics": self.metrics,
            "samples": [
                {**asdict(s), "r_hat": r.tolist()}
                for s, r in zip(self.samples, self.r_hat, strict=True)
            ],
            "pairs": [asdict(p) for p in self.pairs],
        }

    @classmethod
    def from_json(cls, data: dict) -> OnlineRound:
        samples = [
            Candidate(s["prompt"], s["text"], s["tokens"], tuple(s["weights"]), s["ended"])
            for s in data["samples"]
        ]
        pairs = [PreferencePair(**{**p, "weights": tuple(p["weights"])}) for p in data["pairs"]]
        r_hat = np.array([s["r_hat"] for s in data["samples"]], dtype=np.float64)
        return cls(data["round"] - 1, samples, r_hat, pairs, data["metrics"])


def preference_pair(
    samples: list[Candidate], r_hat: np.ndarray, selection: str, min_words: int
) -> PreferencePair | None:
    """The pair one prompt's k samples, all drawn at one weighting w, form: the best by
    w . r_hat (`selection` rank: by w . each objective's percentile rank among the k) that is not
    degenerate is chosen, the worst of all is rejected. None when every sample is degenerate or
    the best allowed is no better than the worst."""
    w = np.array(samples[0].weights)
    value = (percentile_ranks(r_hat) if selection == "rank" else r_hat) @ w  # (k,)
    allowed = np.array([not degenerate(s.text, s.ended, min_words) for s in samples])
    if not allowed.any():
        return None
    best = int(np.argmax(np.where(allowed, value, -np.inf)))
    worst = int(np.argmin(value))
    if value[best] <= value[worst]:
        return None
    chosen, rejected = samples[best], samples[worst]
    return PreferencePair(
        chosen.prompt, chosen.text, chosen.ended, rejected.text, rejected.ended, chosen.weights
    )


def sample_round(trainer: Trainer, index: int) -> OnlineRound:
    """Sample round `index` from the current policy, score it and form its pairs."""
    cfg = trainer.config
    rng = step_rng(cfg.seed, index, trainer.accelerator.process_index)
    sampled = trainer.sample_responses(rng, cfg.temperature)
    batch = sampled.batch
    r_hat = trainer.normalised(score(trainer.objectives, sampled.prompts, sampled.texts))
    args = (batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask)
    with torch.no_grad():
        with adapters_off(trainer.unwrapped):
            ref = sequence_logprobs(trainer.unwrapped, *args)  # (P*k, T)
        with conditioned(trainer.unwrapped, trainer.bank, sampled.conditioning.weights):
            logprobs = sequence_logprobs(trainer.unwrapped, *args)  # (P*k, T)
    kl = sequence_kl(logprobs, ref, batch.response_mask)  # (P*k,)
    tokens = batch.response_mask.sum(dim=1)  # (P*k,)
    samples = [
        Candidate(prompt, text, int(n), tuple(w.tolist()), ended)
        for prompt, text, n, w, ended in zip(
            sampled.prompts, sampled.texts, tokens, sampled.weights, sampled.ended, strict=True
        )
    ]
    k = cfg.samples
    pairs = [
        pair
        for start in range(0, len(samples), k)
        if (
            pair := preference_pair(
                samples[start : start + k], r_hat[start : start + k], cfg.selection, cfg.min_words
            )
        )
    ]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    reward = scalarise(torch.as_tensor(sampled.weights), torch.as_tensor(r_hat))  # (P*k,)
    metrics = {f"rewards/{n}": float(r_hat[:, i].mean()) for i, n in enumerate(trainer.objectives)}
    metrics.update(
        {
            "rewards/scalarised": float(reward.mean()),
            "losses/kl": float(kl.mean()),
            # the floor's definition at its default, so runs with and without it compare
            "quality/degenerate": float(np.mean([degenerate(s.text, s.ended) for s in samples])),
            "lengths/samples": float(tokens.float().mean()),
            "pairs": float(len(pairs)),
        }
    )
    return OnlineRound(index, samples, r_hat, pairs, metrics)


def round_path(trainer: Trainer, index: int) -> Path:
    process = trainer.accelerator.process_index
    return trainer.out / ROUNDS_DIR / f"round-{index + 1:04d}.p{process}.json"


def write_round(trainer: Trainer, record: OnlineRound) -> None:
    path = round_path(trainer, record.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.to_json()) + "\n")
    tmp.replace(path)  # atomic: a resumed run never reads half a round


def read_round(trainer: Trainer, index: int) -> OnlineRound:
    path = round_path(trainer, index)
    if not path.is_file():
        raise UserError(f"cannot resume in the middle of round {index + 1}: {path} is missing")
    return OnlineRound.from_json(json.loads(path.read_text()))


def describe(spec: AdapterSpec) -> str:
    return (
        f"objectives {', '.join(spec.objectives)}, variant {spec.variant}, rank {spec.rank}, "
        f"alpha {spec.alpha:g}"
    )


def start_from(trainer: Trainer, directory: Path) -> None:
    """--init-from: fill the run's fresh adapters with the ones saved in `directory`."""
    metadata = read_metadata(directory)
    check_base_model(metadata, trainer.base.identity, directory)
    if metadata.spec != trainer.spec:
        raise UserError(
            f"the adapter in {directory} has {describe(metadata.spec)}, not the "
            f"{describe(trainer.spec)} of this run"
        )
    fill_bank(trainer.unwrapped, trainer.bank, directory)


def update(trainer: Trainer, record: OnlineRound, update_index: int) -> dict[str, float]:
    """Update `update_index` of a round: a DPO step on the next --batch-size of its pairs."""
    pairs, size = record.pairs, trainer.config.batch_size
    # every process must step together: a round with no pair on some process trains nothing
    fewest = trainer.accelerator.gather(torch.tensor([len(pairs)])).min()
    if int(fewest) == 0:
        return dict(record.metrics)
    batch = [pairs[(update_index * size + j) % len(pairs)] for j in range(min(size, len(pairs)))]
    return {**record.metrics, **trainer.dpo_step(batch)}


def run_online(trainer: Trainer) -> None:
    cfg = trainer.config
    if cfg.init_from and not cfg.resume:
        start_from(trainer, Path(cfg.init_from))
    total = cfg.rounds * cfg.updates_per_round
    bar = tqdm(
        total=total,
        initial=trainer.state.step,
        desc=f"online-dpo {cfg.method}",
        disable=not trainer.accelerator.is_main_process,
    )
    record: OnlineRound | None = None
    while trainer.state.step < total:
        index, update_index = divmod(trainer.state.step, cfg.updates_per_round)
        if record is None or record.index != index:
            # mid-round only after a resume: the interrupted run sampled this round already
            record = read_round(trainer, index) if update_index else sample_round(trainer, index)
            if not update_index:
                write_round(trainer, record)
        metrics = trainer.mean_across_processes(update(trainer, record, update_index))
        trainer.state.step += 1
        trainer.log({"step": trainer.state.step, "round": index + 1, **metrics})
        bar.update(1)
        shown = {n: metrics[f"rewards/{n}"] for n in trainer.objectives}
        shown.update(kl=metrics["losses/kl"], degenerate=metrics["quality/degenerate"])
        if "losses/dpo" in metrics:
            shown["dpo"] = metrics["losses/dpo"]
        bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items()})
        if trainer.state.step % cfg.checkpoint_every == 0:
            trainer.save_checkpoint()
    bar.close()
