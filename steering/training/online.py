"""Online conditioned DPO (`--algo online-dpo`): preference optimisation on the policy's own
samples, round after round.

Round r:
1. draw --prompts-per-step prompts and a weighting w for each (`sample_weightings`: Dirichlet
   rows for clp and prompt, a --corner-share of them at corners, corners w = e_k for soups),
   from a generator seeded with (seed, r, process);
2. the current policy, conditioned on w as the method says (`method_conditioning`), samples
   k = --samples responses per prompt (with --reference-samples N, the last N of them are
   sampled by the DPO reference, --init-from's adapters at w, and compete with the policy's);
3. the objectives score them, normalised with the base-model calibration (r_hat);
4. per prompt, the best sample by w . r_hat (--selection rank: by w . each objective's percentile
   rank among the k; with --selection-floor F, by (1 - F) w + F / K) that clears the quality
   floor (`floor.degenerate`) is preferred to the worst rejectable sample (too short, or
   repeating the prompt: `floor.rejectable`; with --reject, also an offer of help or a
   restatement; with --off-topic-similarity, also far from the prompt: `off_topic`), else to
   the worst of all: one `PreferencePair` per prompt, and with --relabel-weightings N one more
   at each of N other weightings, drawn like the round's (`relabelled`), from the same samples;
5. --updates-per-round conditioned DPO steps (`Trainer.dpo_step`, with the --sft-weight NLL of
   the chosen answers) on the round's pairs update all adapters jointly.
The next round samples from the updated policy (`PolicySampler`). With --sampler llamacpp
(`steering.serve.llamacpp_sampler`) a second process samples round r + 1 on llama.cpp while the
learner trains on round r, from the policy as it was when round r began: one round off-policy,
`rounds/lag` in the metrics. --init-from starts from trained adapters instead of fresh ones; the
DPO reference is the frozen base model either way, or with --reference init the adapters the run
started from (`steering.training.reference`).

Each round's samples, rewards, pairs and measurements are written to OUT/rounds/ before its
updates: a run resumed in the middle of a round trains on the pairs the interrupted run sampled,
so it continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm import tqdm

from steering.errors import UserError
from steering.evaluation.quality import echoes, opens_with_offer
from steering.model.generate import sequence_logprobs
from steering.model.mixing import (
    AdapterSpec,
    adapters_off,
    check_base_model,
    conditioned,
    fill_bank,
    read_metadata,
)
from steering.objectives.embedding import relevance
from steering.training.floor import degenerate, rejectable
from steering.training.losses import percentile_ranks, scalarise, sequence_kl
from steering.training.pool import Candidate, sentence_prefixes
from steering.training.records import (
    PolicySamples,
    PreferencePair,
    reference_rows,
    rejoined,
    sample_request,
    sample_weightings,
    split_request,
)
from steering.training.reference import REFERENCE_BANK, attach_reference, keep_reference
from steering.training.trainer import Trainer, step_rng

ROUNDS_DIR = "rounds"
ORDER_SEEDS = 300_000  # the order of a round's pairs: step_rng(seed, ORDER_SEEDS + round)
RELABEL_SEEDS = 400_000  # a round's extra weightings: step_rng(seed, RELABEL_SEEDS + round)


@dataclass(frozen=True)
class RoundSamples:
    """A round's samples, the objectives' raw scores of them, and how many rounds of updates the
    policy that sampled them had had (the round's own index when it sampled on-policy)."""

    index: int
    samples: list[Candidate]  # (P*k,), k per prompt, each at its prompt's weighting
    raw: dict[str, np.ndarray]  # objective -> (P*k,)
    policy_rounds: int

    def to_json(self) -> dict:
        return {
            "round": self.index + 1,
            "policy_rounds": self.policy_rounds,
            "samples": [
                {**asdict(s), "raw": {n: float(v[i]) for n, v in self.raw.items()}}
                for i, s in enumerate(self.samples)
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> RoundSamples:
        rows = data["samples"]
        samples = [
            Candidate(s["prompt"], s["text"], s["tokens"], tuple(s["weights"]), s["ended"])
            for s in rows
        ]
        raw = {n: np.array([s["raw"][n] for s in rows], dtype=np.float64) for n in rows[0]["raw"]}
        return cls(data["round"] - 1, samples, raw, data["policy_rounds"])


class RoundSampler(Protocol):
    """Where online-dpo's rounds come from: `PolicySampler` samples them in the learner, on
    the policy as it is; `steering.serve.llamacpp_sampler` in a process of its own on llama.cpp,
    one round behind, while the learner trains."""

    def publish(self, trainer: Trainer, rounds_done: int) -> None:
        """Called at the start of every round: the policy has had `rounds_done` rounds."""

    def samples(self, trainer: Trainer, index: int) -> RoundSamples:
        """Round `index`'s samples and their raw scores."""


class PolicySampler:
    """Each round sampled by the learner's own policy, between its updates (on-policy)."""

    def publish(self, trainer: Trainer, rounds_done: int) -> None:
        pass  # the policy is already here

    def samples(self, trainer: Trainer, index: int) -> RoundSamples:
        cfg = trainer.config
        rng = step_rng(cfg.seed, index, trainer.accelerator.process_index)
        request = sample_request(cfg, trainer.prompts, len(trainer.objectives), rng)
        own, theirs = split_request(request, cfg.samples, cfg.reference_samples)
        samples = drawn(trainer.sample_rows(own, cfg.temperature))
        if theirs is not None:  # --reference-samples: the last of each prompt's rows
            reference = drawn(trainer.sample_rows(theirs, cfg.temperature, REFERENCE_BANK))
            samples = rejoined(samples, reference, cfg.samples, cfg.reference_samples)
        raw = trainer.objective_set.score([s.prompt for s in samples], [s.text for s in samples])
        return RoundSamples(index, samples, raw, policy_rounds=index)


def drawn(sampled: PolicySamples) -> list[Candidate]:
    """Sampled responses as candidates, each with its prompt, length and weighting."""
    tokens = sampled.batch.response_mask.sum(dim=1).tolist()  # (rows,)
    return [
        Candidate(prompt, text, n, tuple(w.tolist()), ended)
        for prompt, text, n, w, ended in zip(
            sampled.prompts, sampled.texts, tokens, sampled.weights, sampled.ended, strict=True
        )
    ]


@dataclass(frozen=True)
class OnlineRound:
    """One round: its samples, the pairs they formed (in the order the round's updates take
    them) and what was measured on the samples."""

    sampled: RoundSamples
    pairs: list[PreferencePair]
    metrics: dict[str, float]

    @property
    def index(self) -> int:
        return self.sampled.index

    def to_json(self) -> dict:
        pairs = [asdict(p) for p in self.pairs]
        return {**self.sampled.to_json(), "metrics": self.metrics, "pairs": pairs}

    @classmethod
    def from_json(cls, data: dict) -> OnlineRound:
        pairs = [PreferencePair(**{**p, "weights": tuple(p["weights"])}) for p in data["pairs"]]
        return cls(RoundSamples.from_json(data), pairs, data["metrics"])


def preference_pair(
    samples: list[Candidate],
    r_hat: np.ndarray,
    selection: str,
    min_words: int,
    echo_words: int,
    off_topic: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    kinds: tuple[str, ...] = (),
    selection_floor: float = 0.0,
    floor_at: str = "every",
) -> PreferencePair | None:
    """The pair one prompt's candidates (its k samples, all drawn at one weighting, and their
    sentence prefixes) form at the weighting w (`weights`, default the one they were drawn at;
    the pair is conditioned on it): the best by w . r_hat (`selection` rank: by w . each objective's
    percentile rank among them) that is not degenerate is chosen. The rejected one is the worst
    rejectable candidate (empty, under `min_words` words, repeating `echo_words` words of the
    prompt, of one of `kinds` (`floor.KINDS`), or flagged in `off_topic`, a bool per candidate)
    when there is one, however well it scores, else the worst of all. None when every candidate
    is degenerate, or when none is rejectable and the best allowed is no better than the worst.
    With `selection_floor` F they are compared by (1 - F) w + F / K instead of w: at every w, or
    with `floor_at` "mixed" only where w is not a corner e_k."""
    w = np.array(samples[0].weights if weights is None else weights)
    f = selection_floor if floor_at == "every" or w.max() < 1 else 0.0
    compared_by = (1 - f) * w + f / len(w)
    value = (percentile_ranks(r_hat) if selection == "rank" else r_hat) @ compared_by  # (k,)
    floor = (min_words, echo_words, kinds)
    far = np.zeros(len(samples), dtype=bool) if off_topic is None else off_topic
    bad = far | np.array([rejectable(s.prompt, s.text, *floor) for s in samples])
    allowed = ~far & np.array([not degenerate(s.prompt, s.text, s.ended, *floor) for s in samples])
    if not allowed.any():
        return None
    best = int(np.argmax(np.where(allowed, value, -np.inf)))
    worst = int(np.argmin(np.where(bad, value, np.inf) if bad.any() else value))
    if not bad[worst] and value[best] <= value[worst]:
        return None
    chosen, rejected = samples[best], samples[worst]
    return PreferencePair(
        chosen.prompt, chosen.text, chosen.ended, rejected.text, rejected.ended, tuple(w.tolist())
    )


def relabelled(
    method: str,
    drawn: tuple[float, ...],
    n: int,
    alpha: float,
    rng: np.random.Generator,
    corner_share: float = 0.0,
) -> np.ndarray:
    """(1 + n, K) weightings a prompt's samples form pairs at: the one they were drawn at, then n
    more (--relabel-weightings): Dirichlet(alpha) rows for clp and prompt; for soups, whose
    samples are drawn at a corner e_k, the other corners in a random order, at most K - 1."""
    w = np.array([drawn])
    if not n:
        return w
    if method != "soups":  # drawn as the round's weightings are
        more = sample_weightings(method, w.shape[1], n, alpha, rng, corner_share=corner_share)
        return np.concatenate([w, more])
    others = np.eye(w.shape[1])[np.argmax(w[0]) != np.arange(w.shape[1])]
    return np.concatenate([w, others[rng.permutation(len(others))[:n]]])


def samples_kl(trainer: Trainer, samples: list[Candidate]) -> torch.Tensor:
    """(P*k,) sequence KL of the policy, as it is now, to the base model on the samples."""
    w = np.array([s.weights for s in samples])
    texts, ended = [s.text for s in samples], [s.ended for s in samples]
    args, conditioning = trainer.encode_examples([s.prompt for s in samples], w, texts, ended)
    with torch.no_grad():
        with adapters_off(trainer.unwrapped):
            ref = sequence_logprobs(trainer.unwrapped, *args)  # (P*k, T)
        with conditioned(trainer.unwrapped, trainer.bank, conditioning.weights):
            logprobs = sequence_logprobs(trainer.unwrapped, *args)  # (P*k, T)
    return sequence_kl(logprobs, ref, args[3])


def with_prefixes(
    trainer: Trainer, samples: list[Candidate], r_hat: np.ndarray, k: int
) -> list[tuple[list[Candidate], np.ndarray]]:
    """Each prompt's k samples and, after them, their sentence prefixes (`sentence_prefixes`),
    scored like the samples: a sample the token limit cut off still offers its complete first
    sentences, so the floor has finished answers to prefer, as the offline pool has."""
    prefixes = [sentence_prefixes(s) for s in samples]
    flat = [p for group in prefixes for p in group]
    if flat:
        raw = trainer.objective_set.score([p.prompt for p in flat], [p.text for p in flat])
        flat_r_hat = trainer.normalised(raw)  # (prefixes, K)
    offsets = np.cumsum([0, *map(len, prefixes)])
    groups = []
    for start in range(0, len(samples), k):
        lo, hi = offsets[start], offsets[min(start + k, len(samples))]
        candidates = samples[start : start + k] + flat[lo:hi]
        rows = [r_hat[start : start + k]] + ([flat_r_hat[lo:hi]] if hi > lo else [])
        groups.append((candidates, np.concatenate(rows)))
    return groups


def off_topic(
    groups: list[tuple[list[Candidate], np.ndarray]], similarity: float
) -> list[np.ndarray | None]:
    """Per group of candidates, which are off topic: under `similarity` MiniLM cosine to their
    prompt (all None when the rule is off, 0)."""
    if not similarity:
        return [None] * len(groups)
    flat = [c for candidates, _ in groups for c in candidates]
    cosines = relevance([c.prompt for c in flat], [c.text for c in flat])  # (all candidates,)
    offsets = np.cumsum([0, *(len(candidates) for candidates, _ in groups)])
    return [cosines[lo:hi] < similarity for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]


def form_round(trainer: Trainer, sampled: RoundSamples) -> OnlineRound:
    """Normalise a round's scores, form its pairs (from the samples and their sentence
    prefixes) and measure it (on the samples)."""
    cfg = trainer.config
    samples, k = sampled.samples, cfg.samples
    r_hat = trainer.normalised(sampled.raw)  # (P*k, K)
    groups = with_prefixes(trainer, samples, r_hat, k)
    floor = (cfg.selection, cfg.min_words, cfg.echo_words)
    far = off_topic(groups, cfg.off_topic_similarity)
    relabel = step_rng(cfg.seed, RELABEL_SEEDS + sampled.index, trainer.accelerator.process_index)
    pairs = [
        pair
        for (candidates, rows), flags in zip(groups, far, strict=True)
        for w in relabelled(
            cfg.method,
            candidates[0].weights,
            cfg.relabel_weightings,
            cfg.dirichlet_alpha,
            relabel,
            cfg.corner_share,
        )
        if (
            pair := preference_pair(
                candidates,
                rows,
                *floor,
                flags,
                w,
                cfg.reject_kinds,
                cfg.selection_floor,
                cfg.selection_floor_at,
            )
        )
    ]
    rng = step_rng(cfg.seed, ORDER_SEEDS + sampled.index, trainer.accelerator.process_index)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    # measured on the policy's own samples (with --reference-samples N, each prompt's first k - N)
    own = ~reference_rows(len(samples), k, cfg.reference_samples)  # (P*k,)
    r_hat, samples = r_hat[own], [s for s, mine in zip(samples, own, strict=True) if mine]
    w = torch.tensor([s.weights for s in samples], dtype=torch.float64)  # (P*k, K)
    reward = scalarise(w, torch.as_tensor(r_hat))  # (P*k,)
    metrics = {f"rewards/{n}": float(r_hat[:, i].mean()) for i, n in enumerate(trainer.objectives)}
    metrics.update(
        {
            "rewards/scalarised": float(reward.mean()),
            "losses/kl": float(samples_kl(trainer, samples).mean()),
            # the definitions at their defaults, so runs with and without the floor compare
            "quality/degenerate": float(
                np.mean([degenerate(s.prompt, s.text, s.ended, echo_words=0) for s in samples])
            ),
            "quality/echo": float(np.mean([echoes(s.prompt, s.text) for s in samples])),
            "quality/offer": float(np.mean([opens_with_offer(s.text) for s in samples])),
            "lengths/samples": float(np.mean([s.tokens for s in samples])),
            "pairs": float(len(pairs)),
            "rounds/lag": float(sampled.index - sampled.policy_rounds),
        }
    )
    if cfg.reference_samples:
        metrics["pairs/reference"] = reference_chosen(sampled.samples, ~own, pairs)
    return OnlineRound(sampled, pairs, metrics)


def reference_chosen(
    samples: list[Candidate], theirs: np.ndarray, pairs: list[PreferencePair]
) -> float:
    """The share of `pairs` whose chosen answer is one of the reference's samples (`theirs`, a
    bool per sample) or one of their sentence prefixes."""
    texts = {
        c.text
        for s, mine in zip(samples, theirs, strict=True)
        if mine
        for c in [s, *sentence_prefixes(s)]
    }
    return float(np.mean([p.chosen in texts for p in pairs])) if pairs else 0.0


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
    """--init-from: fill the run's fresh adapters with the ones saved in `directory` (a resumed
    run keeps its checkpoint's), and with --reference init attach them, frozen, as the DPO
    reference (`steering.training.reference`).

    The saved bank must have this run's variant, rank, alpha, layers and number of objectives;
    the objectives' names may differ (a run on redefined objectives starts from adapters trained
    on the old ones), and then adapter k starts objective k, which is said on stderr."""
    metadata = read_metadata(directory)
    check_base_model(metadata, trainer.base.identity, directory)
    saved, wanted = metadata.spec, trainer.spec
    if not wanted.fits(saved):
        raise UserError(
            f"the adapter in {directory} has {describe(saved)}, not the "
            f"{describe(wanted)} of this run"
        )
    if saved.objectives != wanted.objectives and not trainer.config.resume:
        starts = ", ".join(
            f"{new} from {old}"
            for old, new in zip(saved.objectives, wanted.objectives, strict=True)
        )
        print(f"--init-from {directory}: {starts}", file=sys.stderr)
    if trainer.config.reference == "init":
        attach_reference(trainer.unwrapped, trainer.spec, directory, metadata)
    if not trainer.config.resume:
        fill_bank(trainer.unwrapped, trainer.bank, directory, metadata)
        trainer.average.load(None)  # --ema-decay's average starts where the run starts


def update(trainer: Trainer, record: OnlineRound, update_index: int) -> dict[str, float]:
    """Update `update_index` of a round: a DPO step on the next --batch-size of its pairs."""
    pairs, size = record.pairs, trainer.config.batch_size
    # every process must step together: a round with no pair on some process trains nothing
    fewest = trainer.accelerator.gather(torch.tensor([len(pairs)])).min()
    if int(fewest) == 0:
        return dict(record.metrics)
    batch = [pairs[(update_index * size + j) % len(pairs)] for j in range(min(size, len(pairs)))]
    return {**record.metrics, **trainer.dpo_step(batch)}


def run_online(trainer: Trainer, sampler: RoundSampler | None = None) -> None:
    cfg = trainer.config
    if sampler is None:
        if cfg.sampler != "torch":
            raise UserError(f"--sampler {cfg.sampler} runs through `python -m steering train`")
        sampler = PolicySampler()
    if cfg.init_from:
        start_from(trainer, Path(cfg.init_from))
    keep_reference(trainer.out, cfg.reference, Path(cfg.init_from), cfg.resume)
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
        if update_index and (record is None or record.index != index):
            # only after a resume in the middle of a round, which the interrupted run sampled
            record = read_round(trainer, index)
        elif not update_index:
            sampler.publish(trainer, index)
            record = form_round(trainer, sampler.samples(trainer, index))
            write_round(trainer, record)
        metrics = trainer.mean_across_processes(update(trainer, record, update_index))
        trainer.state.step += 1
        trainer.log({"step": trainer.state.step, "round": index + 1, **metrics})
        bar.update(1)
        shown = {n: metrics[f"rewards/{n}"] for n in trainer.objectives}
        shown.update(
            kl=metrics["losses/kl"],
            degenerate=metrics["quality/degenerate"],
            echo=metrics["quality/echo"],
        )
        if "quality/offer" in metrics:  # not in a round written before it was measured
            shown["offer"] = metrics["quality/offer"]
        if "losses/dpo" in metrics:
            shown["dpo"] = metrics["losses/dpo"]
        bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items()})
        if trainer.state.step % cfg.checkpoint_every == 0:
            trainer.save_checkpoint()
    bar.close()
