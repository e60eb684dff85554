"""Batched and streaming generation for a (B, K) weight matrix, and response log-probabilities.

A hand-written decode loop (rather than `model.generate`) so that each row keeps its own weighting
for the whole generation, and so logit mixing can combine K expert rows into one token per step.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import DynamicCache

from steering.errors import UserError
from steering.evaluation.quality import too_short
from steering.model.mixing import conditioned
from steering.model.policy import chat_prompt


@dataclass(frozen=True)
class Decoding:
    """How to sample: checked once when made, so every backend trusts it."""

    max_new_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    min_words: int = 0
    """no stop token until the response has this many words (0: the model may stop at once)"""

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise UserError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"temperature must not be negative, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.min_words < 0:
            raise UserError(f"min_words must not be negative, got {self.min_words}")

    def kwargs(self) -> dict:
        """The keyword arguments of `generate`, `stream` and `decode`."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "min_words": self.min_words,
        }


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str
    weights: tuple[float, ...]
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Conditioning:
    """How a batch is conditioned.

    `bank` is the adapter bank to activate (None: the base model), `weights` the (B, K) weighting
    per row. With `mix_logits`, each row runs as K corner experts (w = e_k) whose next-token logits
    are combined as sum_k w_k * logits_k (logit mixing).
    """

    bank: str | None
    weights: torch.Tensor
    mix_logits: bool = False


@dataclass(frozen=True)
class SampledBatch:
    """Token ids of a generated batch: prompts left-padded, responses right-padded."""

    prompt_ids: torch.Tensor  # (B, P)
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, T), pad after the end
    response_mask: torch.Tensor  # (B, T), 1 up to and including the stop token
    seconds: float


def chat_texts(tokenizer, prompts: list[str]) -> list[str]:
    """The prompts in the chat template; an empty one is refused."""
    for prompt in prompts:
        if not prompt or not prompt.strip():
            raise UserError("the prompt is empty")
    return [chat_prompt(tokenizer, p) for p in prompts]


def check_fits(prompt_tokens: int, max_new_tokens: int, context: int, engine: str = "model's"):
    """Refuse a prompt that leaves no room for the new tokens in the context."""
    if prompt_tokens + max_new_tokens > context:
        raise UserError(
            f"the prompt is {prompt_tokens} tokens; with {max_new_tokens} new tokens it exceeds "
            f"the {engine} context of {context} tokens"
        )


def encode_prompts(tokenizer, prompts: list[str], max_new_tokens: int, context: int):
    """Chat-template and left-pad the prompts; refuse empty or over-long ones."""
    texts = chat_texts(tokenizer, prompts)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    check_fits(int(encoded["attention_mask"].sum(dim=1).max()), max_new_tokens, context)
    return encoded["input_ids"], encoded["attention_mask"]


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


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator) -> torch.Tensor:
    """Next token per row from (B, V) logits: greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _expand_for_logit_mixing(ids, mask, weights):
    """Each row becomes K rows, one per corner expert e_k."""
    batch, k = weights.shape
    ids = ids.repeat_interleave(k, dim=0)  # (B*K, P)
    mask = mask.repeat_interleave(k, dim=0)  # (B*K, P)
    corners = torch.eye(k).repeat(batch, 1)  # (B*K, K)
    return ids, mask, corners


@torch.no_grad()
def decode(
    model,
    tokenizer,
    prompts: list[str],
    conditioning: Conditioning,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    min_words: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (next_token (B,), finished (B,)) once per step until every row stopped.

    A row cannot stop (its stop tokens are masked) while its text has fewer than `min_words`
    words, so "Dear Mr." or "Hello." goes on into an answer; the token limit still ends it.
    """
    Decoding(max_new_tokens, temperature, top_p, seed, min_words)  # the one check of the options
    if not prompts:
        raise UserError("no prompts were given")
    context = getattr(model.config, "max_position_embeddings", 2048)
    ids, mask = encode_prompts(tokenizer, prompts, max_new_tokens, context)
    weights = conditioning.weights
    if weights is not None and weights.shape[0] != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {weights.shape[0]} weight rows")
    rows = 1
    if conditioning.mix_logits:
        rows = weights.shape[1]
        ids, mask, weights_run = _expand_for_logit_mixing(ids, mask, weights)
    else:
        weights_run = weights
    generator = torch.Generator().manual_seed(seed)
    stop_set = stop_token_ids(model, tokenizer)
    stops = torch.tensor(sorted(stop_set))
    batch = len(prompts)
    finished = torch.zeros(batch, dtype=torch.bool)
    short = torch.full((batch,), min_words > 0)  # rows whose text is still under min_words
    sampled: list[list[int]] = [[] for _ in range(batch)]
    cache = DynamicCache()
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B*rows, P): left padding skipped
    step_input, step_positions = ids, positions
    with conditioned(model, conditioning.bank, weights_run):
        for _ in range(max_new_tokens):
            out = model(
                input_ids=step_input,
                attention_mask=mask,
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
            )
            logits = out.logits[:, -1, :].float()  # (B*rows, V)
            if conditioning.mix_logits:
                logits = logits.view(batch, rows, -1)  # (B, K, V)
                logits = (weights[:, :, None] * logits).sum(dim=1)  # (B, V): sum_k w_k logits_k
            if bool(short.any()):
                logits[:, stops] = logits[:, stops].masked_fill(short[:, None], float("-inf"))
            token = _sample(logits, temperature, top_p, generator)  # (B,)
            token = torch.where(finished, torch.full_like(token, tokenizer.pad_token_id), token)
            finished = finished | torch.isin(token, stops)
            for row in short.nonzero().flatten().tolist():
                sampled[row].append(int(token[row]))
                text = response_text(tokenizer, sampled[row], stop_set)
                short[row] = too_short(text, min_words)
            yield token, finished
            if bool(finished.all()):
                return
            step_input = token.repeat_interleave(rows)[:, None]  # (B*rows, 1)
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def sample_batch(model, tokenizer, prompts, conditioning, **decoding) -> SampledBatch:
    """Generate and return token ids (for training) rather than text."""
    start = time.perf_counter()
    steps, done = [], []
    for token, finished in decode(model, tokenizer, prompts, conditioning, **decoding):
        steps.append(token)
        done.append(finished)
    response = torch.stack(steps, dim=1)  # (B, T)
    finished = torch.stack(done, dim=1)  # (B, T)
    # a token counts while the row had not finished before it (the stop token itself counts)
    before = torch.cat([torch.zeros_like(finished[:, :1]), finished[:, :-1]], dim=1)
    context = getattr(model.config, "max_position_embeddings", 2048)
    ids, mask = encode_prompts(tokenizer, prompts, decoding.get("max_new_tokens", 64), context)
    return SampledBatch(ids, mask, response, (~before).long(), time.perf_counter() - start)


def response_text(tokenizer, tokens, stops: set[int]) -> str:
    """The text of sampled response token ids, stop tokens and special tokens left out: the one
    decoder of responses, for every backend and the trainer."""
    kept = [int(t) for t in tokens if int(t) not in stops]
    return tokenizer.decode(kept, skip_special_tokens=True).strip()


def batch_texts(tokenizer, batch: SampledBatch, stops: set[int]) -> list[str]:
    """The response text of every row of a sampled batch (tokens up to its mask)."""
    return [
        response_text(tokenizer, [t for t, m in zip(ids, mask, strict=True) if m], stops)
        for ids, mask in zip(batch.response_ids, batch.response_mask, strict=True)
    ]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    conditioning: Conditioning,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    min_words: int = 0,
) -> list[Generation]:
    """Generate one response per prompt, each row under its own weighting."""
    batch = sample_batch(
        model,
        tokenizer,
        prompts,
        conditioning,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        min_words=min_words,
    )
    texts = batch_texts(tokenizer, batch, stop_token_ids(model, tokenizer))
    results = []
    for row, (prompt, text) in enumerate(zip(prompts, texts, strict=True)):
        weights = (
            tuple(float(x) for x in conditioning.weights[row])
            if conditioning.weights is not None
            else ()
        )
        results.append(
            Generation(
                prompt=prompt,
                text=text,
                weights=weights,
                tokens=int(batch.response_mask[row].sum()),
                seconds=batch.seconds,
            )
        )
    return results


def stream(
    model,
    tokenizer,
    prompt: str,
    conditioning: Conditioning,
    max_new_tokens: int = 64,
    temperature: float = 0.7,
    top_p: float = 0.95,
    seed: int = 0,
    min_words: int = 0,
) -> Iterator[str]:
    """Yield the response text so far after every new token (one prompt)."""
    stops = stop_token_ids(model, tokenizer)
    tokens: list[int] = []
    for token, _ in decode(
        model,
        tokenizer,
        [prompt],
        conditioning,
        max_new_tokens,
        temperature,
        top_p,
        seed,
        min_words,
    ):
        value = int(token[0])
        if value in stops:
            break
        tokens.append(value)
        yield response_text(tokenizer, tokens, stops)


def sequence_logprobs(model, prompt_ids, prompt_mask, response_ids, response_mask) -> torch.Tensor:
    """log p(response token t | prompt, response_<t) per position: (B, T), zero where masked.

    Differentiable; the caller chooses the conditioning (bank and weights) around it.
    """
    ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P+T)
    mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P+T)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    steps = response_ids.shape[1]
    # the output head runs only where a response token is predicted: most of a step's time is
    # the 49k-word head, and the prompt positions would waste it
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=steps + 1
    ).logits
    logits = logits[:, :-1, :].float()  # (B, T, V): position P-1+t predicts response token t
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, response_ids[..., None]).squeeze(-1)
    return logprobs * response_mask


@torch.no_grad()
def response_logprobs(
    model, tokenizer, prompts: list[str], responses: list[str]
) -> list[torch.Tensor]:
    """Per-response 1-D float32 tensors of log p(token | chat prompt, earlier tokens), computed
    with whatever conditioning is active on `model` (use `adapters_off` for the base model)."""
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    prompt = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        response = tokenizer(
            [r if r else tokenizer.eos_token for r in responses],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        )
    finally:
        tokenizer.padding_side = saved_side
    logprobs = sequence_logprobs(
        model,
        prompt["input_ids"],
        prompt["attention_mask"],
        response["input_ids"],
        response["attention_mask"],
    )
    lengths = response["attention_mask"].sum(dim=1)
    return [logprobs[i, : int(lengths[i])].float() for i in range(len(responses))]
