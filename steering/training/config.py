"""The training configuration: every field is a `python -m steering train` flag, documented by
the docstring under it (`add_config_arguments` builds the flags from them)."""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, fields

from steering.errors import UserError
from steering.prompts import TRAIN_PROMPTS
from steering.training.floor import KINDS
from steering.training.reference import REFERENCES
from steering.training.schedule import LR_SCHEDULES

TRAINED_METHODS = ("clp", "prompt", "soups")
ALGOS = ("rloo", "rsf", "dpo", "online-dpo")
SELECTIONS = ("zscore", "rank")
FLOOR_AT = ("every", "mixed")
SFT_LOSSES = ("sequence", "token")
SAMPLERS = ("torch", "llamacpp")


def listed(option: str) -> tuple[str, ...]:
    """The names of a comma-separated option, stripped, empty ones dropped."""
    return tuple(n.strip() for n in option.split(",") if n.strip())


@dataclass
class TrainConfig:
    method: str = "clp"
    """what to train: clp (K adapters mixed by w, trained jointly), prompt (w written into the
    prompt, one adapter) or soups (each of the K adapters alone at its corner w = e_k)"""
    algo: str = "rsf"
    """rloo (online REINFORCE, leave-one-out baseline, KL penalty), rsf (conditioned
    rejection-sampling finetuning on a candidate pool), dpo (conditioned preference
    optimisation of the best over the worst candidate of the same pool) or online-dpo (the same
    preference optimisation on the current policy's own samples, round after round)"""
    objectives: str = ""
    """comma-separated objective names, in the order the weights refer to (default: every
    objective of --objectives-file in its order, else positivity,brevity,answer_relevance)"""
    objectives_file: str = ""
    """TOML file declaring the objectives and how each scores: reward models, classifiers,
    Python functions, the learned human reward, built-in scorers (docs/objectives.md; default:
    STEERING_OBJECTIVES_FILE, else the built-in objectives named by --objectives)"""
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
    """conditioned layers: attn (the attention projections: q, k, v, o in Llama, Qwen, Gemma,
    Mistral ...), full (every linear layer but the output head) or logit (the output head)"""
    target_modules: str = ""
    """comma-separated names (or name suffixes) of the linear layers to condition, instead of
    the variant's choice, e.g. q_proj,v_proj or qkv_proj"""
    rank: int = 4
    """LoRA rank r of every adapter"""
    lora_alpha: float = 8.0
    """LoRA alpha; each adapter is scaled by alpha / r"""
    dirichlet_alpha: float = 1.0
    """concentration of the Dirichlet that training weightings are drawn from"""
    corner_share: float = 0.0
    """clp, prompt: share of the training weightings drawn at a corner w = e_k (one objective,
    chosen uniformly) instead of from the Dirichlet, so each adapter also trains alone, as soups'
    do, and the slider's end keeps what that objective alone asks for (0: none; 1: corners only)"""
    lr: float = 1e-3
    """AdamW learning rate of the adapter parameters"""
    lr_schedule: str = "constant"
    """the learning rate over the run's optimiser steps: constant (--lr throughout), linear or
    cosine (from --lr at the first step towards 0 at the end)"""
    ema_decay: float = 0.0
    """Polyak averaging: the run saves an exponential moving average of the adapter parameters
    over the optimiser steps, average <- d * average + (1 - d) * parameters after each step,
    while training and sampling use the live parameters (0: the live parameters are saved)"""
    steps: int = 100
    """rloo: number of optimisation steps"""
    prompts_per_step: int = 4
    """rloo: prompts per step; online-dpo: prompts per round (each with its own weighting)"""
    samples: int = 4
    """rloo, online-dpo: responses per prompt, k (the leave-one-out baseline and a preference
    pair need k >= 2)"""
    beta: float = 0.05
    """rloo: weight of the KL penalty to the frozen base model; dpo, online-dpo: the DPO beta, the
    strength of the implicit KL regularisation to the DPO reference (the frozen base model, or
    with --reference init the adapters the run started from)"""
    rounds: int = 1
    """rsf, dpo: rounds; round 1 picks from the base pool, later rounds sample from the policy;
    online-dpo: rounds, each sampling from the policy as the previous round's updates left it"""
    updates_per_round: int = 1
    """online-dpo: DPO updates on each round's pairs before the next round samples, each on
    --batch-size pairs taken in turn (starting over when the round's pairs run out)"""
    min_words: int = 5
    """online-dpo: the quality floor: a sample that is empty, has fewer than N words or was cut
    off by --max-new-tokens is never the chosen answer of a pair, and a too-short one (empty or
    under N words) is the rejected answer whenever a prompt has one (0: no minimum length, and
    a cut-off sample may be chosen; --echo-words still applies)"""
    off_topic_similarity: float = 0.0
    """online-dpo: a candidate whose MiniLM similarity to its prompt is under S (a short
    sentence on another subject, "Hey there! I hope you're doing well!") is never the chosen
    answer of a pair and is the rejected one whenever a prompt has one, like a too-short answer
    or an echo (`evaluate` counts answers under 0.2 as off topic; 0: off)"""
    sample_min_words: int = 0
    """rloo, online-dpo: the decoding floor while sampling: a response's stop tokens are masked
    until it has N words, as `evaluate --min-words` and the app decode, so the policy is trained
    on the answers it will be served with (0: the model may stop at once)"""
    echo_words: int = 8
    """online-dpo: a sample that repeats N consecutive words of its prompt (or all of the prompt
    when it is shorter) is never the chosen answer of a pair and is the rejected answer whenever
    a prompt has one: restating the request wins relevance without answering (0: allowed)"""
    reject: str = ""
    """online-dpo: comma-separated kinds of answer that, like a too-short answer or an echo, are
    never the chosen answer of a pair and are the rejected one whenever a prompt has one: offer
    (the first sentence offers help instead of answering, "I'm happy to help you with that.") and
    restatement (under a fifth of its words new to the prompt), as `evaluate` counts them
    (empty: neither)"""
    init_from: str = ""
    """online-dpo: adapter directory to start from (e.g. assets/adapters/clp, trained for the
    same method, objectives, variant, rank and alpha on the same base model), whose calibration
    the run keeps instead of sampling a base pool; empty: fresh adapters, which leave the base
    model unchanged"""
    reference: str = "base"
    """online-dpo: the DPO reference policy: base (the frozen base model) or init (the policy the
    run started from: --init-from's adapters, frozen, mixed at each pair's weighting, so the run
    improves on them where its pairs say so instead of being pulled back to the base model; a
    resumed run keeps the reference it started with)"""
    reference_samples: int = 0
    """online-dpo with --reference init: of each prompt's k (--samples) samples, the last N are
    drawn from the DPO reference (--init-from's adapters at the prompt's weighting) instead of
    the policy, and compete for the pair as the policy's own do, so wherever the policy has
    fallen behind the adapters it started from, their answer is the chosen one (0: all k from
    the policy)"""
    sampler: str = "torch"
    """online-dpo: where rounds are sampled: torch (by the learner between its updates, from the
    policy as it is) or llamacpp (a second process samples the next round on llama.cpp while the
    learner trains on the last one, from the policy one round behind; needs a GGUF base model)"""
    relabel_weightings: int = 0
    """online-dpo: hindsight relabelling: each prompt's samples (and their sentence prefixes) also
    form a pair at N more weightings, drawn as the round's are (soups: the other corners, at most
    K - 1), so a round trains on up to 1 + N pairs per prompt from the same samples; no more
    samples are generated (0: a pair at the weighting they were sampled at only)"""
    weightings_per_prompt: int = 3
    """rsf, dpo: weightings drawn per prompt and round (soups: that many of the K corners
    w = e_k, drawn at random, or all K when it is K or more)"""
    epochs: int = 1
    """rsf, dpo: passes over each round's selected examples"""
    selection: str = "zscore"
    """rsf, dpo, online-dpo: how candidates are compared for a weighting w: zscore (w . r_hat,
    rewards as z-scores under the base-model calibration) or rank (w . each objective's percentile
    rank among the prompt's candidates, so every objective spans the same range whatever its
    spread)"""
    selection_floor: float = 0.0
    """online-dpo: candidates for a weighting w are compared by (1 - F) w + F / K, so no
    objective weighs nothing in the comparison (the pair stays conditioned on w): at a corner
    or an edge of the simplex, of two answers that serve w alike the one better on the other
    objectives is chosen, as a strictly positive weighting's best answer is Pareto optimal and a
    zero weight's need not be (0: compared by w)"""
    selection_floor_at: str = "every"
    """online-dpo: where --selection-floor applies: every (each weighting) or mixed (every
    weighting but the corners w = e_k, whose pairs are chosen by their one objective)"""
    sft_weight: float = 0.0
    """dpo, online-dpo: weight of the chosen responses' negative log-likelihood (averaged as
    --sft-loss says) added to the DPO loss, which keeps the preferred answers likely while the
    rejected ones are pushed down (the NLL term of Pang et al. 2024's iterative RPO)"""
    sft_loss: str = "sequence"
    """rsf and dpo's --sft-weight term: how a batch's token log-likelihoods are averaged:
    sequence (each target's mean token log-prob, so every target counts alike, however short)
    or token (the mean over all target tokens of the batch, so a long target counts more)"""
    batch_size: int = 16
    """rsf, dpo, online-dpo: examples (dpo, online-dpo: preference pairs) per finetuning step"""
    max_new_tokens: int = 80
    """longest sampled response, in tokens"""
    temperature: float = 0.9
    """sampling temperature for candidate pools and online-dpo rounds (rloo always samples at 1.0
    to stay on-policy)"""
    seed: int = 0
    """seed of every random choice"""
    checkpoint_every: int = 20
    """save a checkpoint every N steps (and on Ctrl-C)"""
    resume: bool = False
    """continue from the checkpoint in --out; with a larger --rounds (or --steps) a finished run
    trains on, and at a constant learning rate ends where a run started that long would"""
    base_model: str = ""
    """base model: a local directory or .gguf, or a Hub id where the Hub is reachable (default:
    STEERING_BASE_MODEL or the shipped SmolLM2 GGUF)"""
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
        if self.algo == "online-dpo":
            self.check_online()
        elif self.init_from:
            raise UserError("init_from is used only by online-dpo")
        elif self.relabel_weightings:
            raise UserError("relabel_weightings is used only by online-dpo")
        elif self.selection_floor or self.selection_floor_at != "every":
            raise UserError("selection_floor is used only by online-dpo")
        elif self.reject:
            raise UserError("reject is used only by online-dpo")
        elif self.sampler != "torch":
            raise UserError("sampler is used only by online-dpo")
        elif self.reference != "base":
            raise UserError("reference is used only by online-dpo")
        elif self.reference_samples:
            raise UserError("reference_samples is used only by online-dpo")
        if self.sample_min_words < 0:
            raise UserError(f"sample_min_words must not be negative, got {self.sample_min_words}")
        if self.sample_min_words and self.algo not in ("rloo", "online-dpo"):
            raise UserError("sample_min_words is used only by rloo and online-dpo")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(
                f"lr_schedule {self.lr_schedule!r} is unknown; choose one of {', '.join(LR_SCHEDULES)}"
            )
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        if self.dirichlet_alpha <= 0:
            raise UserError("dirichlet_alpha must be positive")
        if not 0 <= self.corner_share <= 1:
            raise UserError(f"corner_share must be in [0, 1] (0: off), got {self.corner_share}")
        if self.corner_share and self.method == "soups":
            raise UserError("corner_share is for clp and prompt; soups trains at the corners only")
        if self.selection not in SELECTIONS:
            raise UserError(
                f"selection {self.selection!r} is unknown; choose one of {', '.join(SELECTIONS)}"
            )
        if self.sft_loss not in SFT_LOSSES:
            raise UserError(
                f"sft_loss {self.sft_loss!r} is unknown; choose one of {', '.join(SFT_LOSSES)}"
            )

    def check_online(self) -> None:
        if self.samples < 2:
            raise UserError("online-dpo needs at least 2 samples per prompt to form a pair")
        for name in ("rounds", "updates_per_round", "prompts_per_step", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.sampler not in SAMPLERS:
            raise UserError(
                f"sampler {self.sampler!r} is unknown; choose one of {', '.join(SAMPLERS)}"
            )
        for name in ("min_words", "echo_words", "relabel_weightings"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must not be negative (0: off), got {getattr(self, name)}")
        for kind in self.reject_kinds:
            if kind not in KINDS:
                raise UserError(f"reject {kind!r} is unknown; choose from {', '.join(KINDS)}")
        if not 0 <= self.selection_floor <= 1:
            raise UserError(
                f"selection_floor must be in [0, 1] (0: off), got {self.selection_floor}"
            )
        if self.selection_floor_at not in FLOOR_AT:
            raise UserError(
                f"selection_floor_at {self.selection_floor_at!r} is unknown; choose one of "
                f"{', '.join(FLOOR_AT)}"
            )
        if self.selection_floor_at != "every" and not self.selection_floor:
            raise UserError("selection_floor_at needs a selection_floor above 0")
        if not 0 <= self.off_topic_similarity < 1:
            raise UserError(
                f"off_topic_similarity must be in [0, 1) (0: off), got {self.off_topic_similarity}"
            )
        if self.reference not in REFERENCES:
            raise UserError(
                f"reference {self.reference!r} is unknown; choose one of {', '.join(REFERENCES)}"
            )
        if self.reference == "init" and not self.init_from:
            raise UserError("reference init needs --init-from: the adapters the run starts from")
        if not 0 <= self.reference_samples < self.samples:
            raise UserError(
                f"reference_samples must be in [0, samples) so the policy samples too, got "
                f"{self.reference_samples}"
            )
        if self.reference_samples and self.reference != "init":
            raise UserError("reference_samples needs --reference init: the policy they come from")
        if self.reference_samples and self.sampler != "torch":
            raise UserError("reference_samples needs --sampler torch")

    @property
    def objective_names(self) -> tuple[str, ...]:
        """The objectives named by --objectives (empty: all of the file's, or the default)."""
        return listed(self.objectives)

    @property
    def reject_kinds(self) -> tuple[str, ...]:
        """The kinds named by --reject."""
        return listed(self.reject)

    @property
    def target_module_names(self) -> tuple[str, ...]:
        return listed(self.target_modules)

    def objective_set(self):
        """The objectives to train on, built and checked (`steering.objectives.declared`)."""
        from steering.objectives.declared import configured_objectives_file, named_objectives

        file = configured_objectives_file(self.objectives_file or None)
        chosen = named_objectives(self.objective_names, file)
        if len(chosen.names) < 2:
            raise UserError("give at least two objectives to trade off")
        return chosen


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
