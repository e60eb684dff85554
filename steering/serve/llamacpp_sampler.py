"""online-dpo with --sampler llamacpp: llama.cpp samples the next round in a process of its own
while the torch learner trains on the last one, so both cores work.

    python -m steering train --method clp --algo online-dpo --sampler llamacpp --rounds 42 ...

The two processes meet in the run directory:
- at the start of round d the learner publishes its policy, the adapters after d rounds, as
  OUT/policy/after-NNNN/ (`save_bank`), and removes the versions the sampler is done with;
- the sampler samples round r from the policy after r - 1 rounds (round 0 from the first one),
  exported to GGUF LoRA, scores it and writes OUT/rounds/round-NNNN.samples.json;
- the learner forms that round's pairs (`online.form_round`) and trains on them.
The lag is fixed, one round (none for round 0), rather than "whatever is newest", so a run is
reproducible, and a resumed run samples what the interrupted one would have: the sampler skips
the rounds whose samples are written already.

This runs both llama.cpp and the trainer, so it lives in serving: the science never imports it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steering.errors import UserError
from steering.model.generate import Decoding
from steering.model.mixing import AdapterMetadata, save_bank
from steering.model.policy import resolve_base_model_path
from steering.objectives.declared import ObjectiveSet
from steering.prompts import read_prompts
from steering.serve.backends import (
    CONTEXT_ENV,
    DEFAULT_CONTEXT,
    LLAMACPP_MISSING,
    Backend,
    llamacpp_available,
)
from steering.serve.llamacpp_backend import LlamaCppSteerer, attach_llamacpp
from steering.serve.llamacpp_runtime import LlamaCppRuntime, default_threads
from steering.training.config import TrainConfig
from steering.training.online import ROUNDS_DIR, RoundSamples
from steering.training.pool import Candidate
from steering.training.records import sample_request
from steering.training.trainer import Trainer, step_rng
from steering.weights import Weights

POLICY_DIR = "policy"
POLL_SECONDS = 0.5


def samples_path(out: Path, index: int) -> Path:
    return out / ROUNDS_DIR / f"round-{index + 1:04d}.samples.json"


def policy_path(out: Path, rounds_done: int) -> Path:
    return out / POLICY_DIR / f"after-{rounds_done:04d}"


def sampling_policy(index: int) -> int:
    """How many rounds the policy that samples round `index` has had: one fewer than on-policy
    (round 0: the first policy)."""
    return max(index - 1, 0)


def wait_for(path: Path, writer_alive: Callable[[], bool]) -> bool:
    """Wait until `path` exists (True) or the process that writes it has stopped (False)."""
    while not path.exists():
        if not writer_alive():
            return path.exists()
        time.sleep(POLL_SECONDS)
    return True


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)  # atomic: the reader never sees half a file


def sample_round_with(
    backend: Backend, config: TrainConfig, prompts: list[str], index: int, scorers: ObjectiveSet
) -> RoundSamples:
    """Round `index` on any backend, with the draws of the learner's own sampler (the same
    prompts and weightings for the same seed and round), scored by `scorers`."""
    objectives = scorers.names
    request = sample_request(config, prompts, len(objectives), step_rng(config.seed, index))
    weights = [Weights(objectives, tuple(float(x) for x in row)) for row in request.weights]
    decoding = Decoding(
        config.max_new_tokens, config.temperature, 1.0, request.seed, config.sample_min_words
    )
    generations = backend.generate(request.prompts, weights, decoding)
    samples = [
        # the token count includes the stop token: a full count means the limit cut it off
        Candidate(g.prompt, g.text, g.tokens, w.values, g.tokens < config.max_new_tokens)
        for g, w in zip(generations, weights, strict=True)
    ]
    raw = scorers.score(request.prompts, [g.text for g in generations])
    return RoundSamples(index, samples, raw, sampling_policy(index))


def sample_rounds(
    config: TrainConfig,
    start: int,
    backend_for: Callable[[Path], Backend],
    learner_alive: Callable[[], bool],
) -> None:
    """The sampler's loop: every round from `start` on whose samples are not written yet, on
    `backend_for(policy directory)`, asked once per policy."""
    out = Path(config.out)
    prompts = read_prompts(config.prompts, config.limit or None)
    scorers = config.objective_set()  # built once: every round scores with the same models
    current: tuple[Path, Backend] | None = None
    for index in range(start, config.rounds):
        target = samples_path(out, index)
        if target.exists():
            continue
        policy = policy_path(out, sampling_policy(index))
        if not wait_for(policy, learner_alive):
            return  # the learner stopped, and says why
        if current is None or current[0] != policy:
            current = (policy, backend_for(policy))
        write_json(target, sample_round_with(current[1], config, prompts, index, scorers).to_json())


def run_llamacpp_sampler(config: TrainConfig, start: int) -> None:
    """The sampler process: llama.cpp and the objectives on one thread each, one after the
    other, so the process keeps one core busy."""
    torch.set_num_threads(1)
    path = resolve_base_model_path(config.base_model or None).resolve()
    runtime = LlamaCppRuntime(path, 1, int(os.environ.get(CONTEXT_ENV, DEFAULT_CONTEXT)))
    loaded: list[LlamaCppSteerer] = []

    def backend_for(policy: Path) -> Backend:
        if loaded:  # the older policy is done with
            runtime.release(loaded.pop().adapter_paths)
        loaded.append(attach_llamacpp(runtime, config.method, policy))
        return loaded[0]

    try:
        sample_rounds(config, start, backend_for, multiprocessing.parent_process().is_alive)
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches both processes: the learner saves the checkpoint


class AsyncSampler:
    """The learner's side (an `online.RoundSampler`): publish the policy, wait for the rounds
    the sampler (alive while `sampler_alive()`) writes."""

    def __init__(self, sampler_alive: Callable[[], bool]):
        self.sampler_alive = sampler_alive

    def publish(self, trainer: Trainer, rounds_done: int) -> None:
        target = policy_path(trainer.out, rounds_done)
        if not target.exists():  # a resumed run's policy is the one the interrupted run wrote
            staging = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(staging, ignore_errors=True)
            training = {"objectives": list(trainer.objectives), "rounds": rounds_done}
            metadata = AdapterMetadata(trainer.spec, trainer.base.identity, training)
            save_bank(trainer.unwrapped, trainer.bank, staging, metadata)
            staging.replace(target)
        # the sampler is at round rounds_done (policy rounds_done - 1) or waits for this one
        for older in target.parent.glob("after-*"):
            if int(older.name.removeprefix("after-")) < rounds_done - 1:
                shutil.rmtree(older, ignore_errors=True)

    def samples(self, trainer: Trainer, index: int) -> RoundSamples:
        path = samples_path(trainer.out, index)
        if not wait_for(path, self.sampler_alive):
            raise UserError(f"the sampler stopped before writing {path}; its error is above")
        return RoundSamples.from_json(json.loads(path.read_text()))


def train_on_llamacpp(config: TrainConfig) -> Path:
    """online-dpo with its rounds sampled on llama.cpp in a second process."""
    if not llamacpp_available():
        raise UserError(LLAMACPP_MISSING)
    if not resolve_base_model_path(config.base_model or None).is_file():
        raise UserError("--sampler llamacpp needs a .gguf base model, which llama.cpp reads")
    rounds = Path(config.out) / ROUNDS_DIR
    if not config.resume and any(rounds.glob("*.samples.json")):
        raise UserError(f"{rounds} holds an earlier run's rounds; continue it with --resume")
    torch.set_num_threads(max(1, default_threads() - 1))  # the sampler has a core of its own
    trainer = Trainer(config)
    if trainer.accelerator.num_processes > 1:
        raise UserError("--sampler llamacpp trains in one learner process")
    start = trainer.state.step // config.updates_per_round
    process = multiprocessing.get_context("spawn").Process(
        target=run_llamacpp_sampler, args=(config, start), name="online-dpo sampler", daemon=True
    )
    process.start()
    try:
        return trainer.run(AsyncSampler(process.is_alive))
    finally:
        if process.is_alive():
            process.terminate()
        process.join()
