"""The `human` objective: a small reward model learned from people's ratings in the app.

Features are frozen MiniLM embeddings: x = [e(response), e(prompt) * e(response)] (768 values;
the product carries how the response relates to its prompt). A shared trunk
h = tanh(W x + b) (64 units) feeds two heads:

* a Bradley-Terry head, reward r = v . h, trained on pairwise choices with
  -log sigmoid(r_chosen - r_rejected) (Bradley & Terry 1952; the InstructGPT reward loss),
  and for a tie the cross-entropy against 1/2, -(log s(d) + log s(-d)) / 2, d = r_a - r_b;
* a regression head on per-objective Likert ratings (1-5, rescaled to [0, 1]) where people gave
  them, trained with squared error -- the HelpSteer2 idea of rating attributes, not only pairs;
  sharing the trunk lets the attribute ratings shape the features the reward reads.

    report = train_human_reward(records, "runs/human_reward", seed=0)
    STEERING_HUMAN_REWARD=runs/human_reward python -m steering ...   # `human` now scores

The `human` score is the raw Bradley-Terry reward r (unbounded; only differences are
meaningful, and calibration z-scores it). It needs at least MIN_PAIRS
ratings with a winner. The model is saved as `human_reward.safetensors` + `human_reward.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from types import MappingProxyType

import numpy as np

from steering.errors import UserError
from steering.objectives.embedding import EMBEDDER_NAME, EMBEDDING_DIM, embed
from steering.objectives.registry import register_objective

MIN_PAIRS = 20
"""Fewer rated pairs with a winner than this and training refuses: with a 20 % hold-out, 20
pairs leave 4 to measure accuracy on, already a coarse estimate."""

HELDOUT_FRACTION = 0.2
LIKERT_MIN, LIKERT_MAX = 1.0, 5.0
HIDDEN = 64
STEPS = 300
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-2
LIKERT_LOSS_WEIGHT = 1.0
WEIGHTS_FILE = "human_reward.safetensors"
CONFIG_FILE = "human_reward.json"
PATH_ENV = "STEERING_HUMAN_REWARD"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PreferenceRecord:
    """One rated pair, as the storage layer's export produces it.

    `likert_chosen` / `likert_rejected` map objective names to 1-5 ratings of that response
    (any subset, possibly empty). With `tie`, neither response won and the order is arbitrary.
    """

    prompt: str
    chosen: str
    rejected: str
    tie: bool = False
    likert_chosen: Mapping[str, float] = field(default_factory=dict)
    likert_rejected: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        for ratings in (self.likert_chosen, self.likert_rejected):
            for name, value in ratings.items():
                if not LIKERT_MIN <= float(value) <= LIKERT_MAX:
                    raise UserError(
                        f"Likert rating {value!r} for {name!r} is outside "
                        f"{LIKERT_MIN:g}-{LIKERT_MAX:g}"
                    )
        object.__setattr__(self, "likert_chosen", MappingProxyType(dict(self.likert_chosen)))
        object.__setattr__(self, "likert_rejected", MappingProxyType(dict(self.likert_rejected)))


@dataclass(frozen=True)
class HumanRewardReport:
    """What training did, saved inside human_reward.json too.

    `heldout_accuracy`: fraction of held-out pairs with a winner where the reward ranks the
    chosen response higher (chance is 0.5). `heldout_likert_mae`: mean absolute error in Likert
    points per objective with held-out ratings (objectives without any are left out).
    """

    out_dir: str
    pairs: int
    ties: int
    train_pairs: int
    heldout_pairs: int
    train_accuracy: float
    heldout_accuracy: float
    likert_objectives: tuple[str, ...]
    heldout_likert_mae: Mapping[str, float]
    seed: int

    def to_json(self) -> dict:
        # Not dataclasses.asdict: it deep-copies fields, and a mappingproxy cannot be copied.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["likert_objectives"] = list(self.likert_objectives)
        data["heldout_likert_mae"] = dict(self.heldout_likert_mae)
        return data


class HumanReward:
    """A trained reward: `reward()` for the `human` objective, `likert()` for the attribute
    predictions (in Likert points, clipped to 1-5)."""

    def __init__(self, network, likert_objectives: Sequence[str], metadata: Mapping):
        self.network = network
        self.likert_objectives = tuple(likert_objectives)
        self.metadata = dict(metadata)

    def _outputs(self, prompts: list[str], responses: list[str]):
        import torch

        features = torch.from_numpy(_features(prompts, responses))
        with torch.no_grad():
            return self.network(features)

    def reward(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        if not responses:
            return np.zeros(0)
        reward, _ = self._outputs(prompts, responses)
        return reward.numpy().astype(float)

    def likert(self, prompts: list[str], responses: list[str]) -> dict[str, np.ndarray]:
        if not responses:
            return {name: np.zeros(0) for name in self.likert_objectives}
        _, likert = self._outputs(prompts, responses)
        points = _from_unit(likert.numpy().astype(float))
        return {name: points[:, j] for j, name in enumerate(self.likert_objectives)}


def _features(prompts: list[str], responses: list[str]) -> np.ndarray:
    """(n, 768) float32: [e(response), e(prompt) * e(response)], each text embedded once."""
    unique = list(dict.fromkeys([*prompts, *responses]))
    vectors = embed(unique)  # (U, 384)
    index = {text: i for i, text in enumerate(unique)}
    p = vectors[[index[t] for t in prompts]]  # (n, 384)
    r = vectors[[index[t] for t in responses]]  # (n, 384)
    return np.concatenate([r, p * r], axis=1).astype(np.float32)  # (n, 768)


def _to_unit(points):
    return (points - LIKERT_MIN) / (LIKERT_MAX - LIKERT_MIN)


def _from_unit(unit):
    return np.clip(LIKERT_MIN + unit * (LIKERT_MAX - LIKERT_MIN), LIKERT_MIN, LIKERT_MAX)


def _network(num_likert: int):
    import torch
    from torch import nn

    class RewardNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(2 * EMBEDDING_DIM, HIDDEN)
            self.reward_head = nn.Linear(HIDDEN, 1, bias=False)  # a bias cancels in r_a - r_b
            self.likert_head = nn.Linear(HIDDEN, max(num_likert, 1))

        def forward(self, x):  # x: (B, 768)
            h = torch.tanh(self.trunk(x))  # (B, HIDDEN)
            return self.reward_head(h).squeeze(-1), self.likert_head(h)[:, :num_likert]

    return RewardNetwork()


def _split(records: list[PreferenceRecord], seed: int) -> tuple[list[int], list[int]]:
    """Hold out HELDOUT_FRACTION of the decided pairs and of the ties, separately, so the
    held-out accuracy always has decided pairs to count."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for is_tie in (False, True):
        group = [i for i, r in enumerate(records) if r.tie == is_tie]
        rng.shuffle(group)
        n_out = int(round(HELDOUT_FRACTION * len(group)))
        heldout += group[:n_out]
        train += group[n_out:]
    return sorted(train), sorted(heldout)


def _pair_tensors(records: list[PreferenceRecord], likert_objectives: tuple[str, ...]):
    """Features and targets for a list of records; rows 2i and 2i+1 are chosen and rejected."""
    import torch

    prompts = [r.prompt for r in records for _ in range(2)]
    responses = [text for r in records for text in (r.chosen, r.rejected)]
    features = torch.from_numpy(_features(prompts, responses))  # (2N, 768)
    targets = torch.zeros(len(responses), len(likert_objectives))  # (2N, L)
    observed = torch.zeros(len(responses), len(likert_objectives))  # (2N, L), 1 where rated
    for i, record in enumerate(records):
        for row, ratings in ((2 * i, record.likert_chosen), (2 * i + 1, record.likert_rejected)):
            for j, name in enumerate(likert_objectives):
                if name in ratings:
                    targets[row, j] = float(_to_unit(float(ratings[name])))
                    observed[row, j] = 1.0
    ties = torch.tensor([r.tie for r in records], dtype=torch.bool)
    return features, targets, observed, ties


def _losses(network, features, targets, observed, ties):
    from torch.nn import functional as F

    reward, likert = network(features)  # (2N,), (2N, L)
    margin = reward[0::2] - reward[1::2]  # (N,) r_chosen - r_rejected
    decided = -F.logsigmoid(margin)
    tied = -(F.logsigmoid(margin) + F.logsigmoid(-margin)) / 2
    preference = (ties * tied + ~ties * decided).mean()
    squared = (likert - targets) ** 2 * observed
    likert_loss = squared.sum() / observed.sum().clamp(min=1.0)
    return preference, likert_loss, margin, likert


def _accuracy(margin, ties) -> float:
    decided = margin[~ties]
    return float((decided > 0).float().mean()) if decided.numel() else 0.0


def train_human_reward(
    records: Iterable[PreferenceRecord], out_dir: str | os.PathLike, seed: int = 0
) -> HumanRewardReport:
    """Fit the reward on 80 % of `records`, report accuracy on the rest, save it to `out_dir`.

    Full-batch AdamW for STEPS steps on frozen embeddings: a few seconds on a CPU for thousands
    of pairs. The saved model is the one the held-out numbers describe.
    """
    import torch
    from safetensors.torch import save_file

    records = list(records)
    decided = sum(not r.tie for r in records)
    if decided < MIN_PAIRS:
        raise UserError(
            f"training a human reward needs at least {MIN_PAIRS} rated pairs with a winner, "
            f"got {decided}; collect more ratings first"
        )
    likert_objectives = tuple(
        sorted({name for r in records for name in (*r.likert_chosen, *r.likert_rejected)})
    )
    train_ids, heldout_ids = _split(records, seed)
    train = _pair_tensors([records[i] for i in train_ids], likert_objectives)
    heldout = _pair_tensors([records[i] for i in heldout_ids], likert_objectives)

    # fork_rng: seed the initialisation without moving the caller's global torch RNG.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = _network(len(likert_objectives))
    optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    # The matrices are tiny ((2N, 768) @ (768, 64)): on a busy machine, synchronising intra-op
    # threads costs ~10x more than the arithmetic, so train on one thread and restore after.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        network.train()
        for _ in range(STEPS):
            preference, likert_loss, _, _ = _losses(network, *train)
            loss = preference + LIKERT_LOSS_WEIGHT * likert_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            _, _, train_margin, _ = _losses(network, *train)
            _, _, heldout_margin, heldout_likert = _losses(network, *heldout)
    finally:
        torch.set_num_threads(threads)
    _, targets, observed, heldout_ties = heldout
    mae = {}
    for j, name in enumerate(likert_objectives):
        rated = observed[:, j] > 0
        if rated.any():
            error = (heldout_likert[rated, j] - targets[rated, j]).abs().mean()
            mae[name] = float(error) * (LIKERT_MAX - LIKERT_MIN)

    out = Path(out_dir)
    report = HumanRewardReport(
        out_dir=str(out),
        pairs=len(records),
        ties=len(records) - decided,
        train_pairs=len(train_ids),
        heldout_pairs=len(heldout_ids),
        train_accuracy=_accuracy(train_margin, train[3]),
        heldout_accuracy=_accuracy(heldout_margin, heldout_ties),
        likert_objectives=likert_objectives,
        heldout_likert_mae=MappingProxyType(mae),
        seed=seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    metadata = {
        "format": FORMAT_VERSION,
        "embedder": EMBEDDER_NAME,
        "features": "[e(response), e(prompt) * e(response)]",
        "hidden": HIDDEN,
        "likert_objectives": list(likert_objectives),
        "likert_scale": [LIKERT_MIN, LIKERT_MAX],
        "report": report.to_json(),
    }
    (out / CONFIG_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    _load.cache_clear()  # a reward retrained into the same directory must be re-read
    return report


@cache
def _load(directory: Path) -> HumanReward:
    from safetensors.torch import load_file

    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(
            f"{directory} holds no trained human reward ({CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    metadata = json.loads(config_path.read_text())
    if metadata.get("format") != FORMAT_VERSION or metadata.get("embedder") != EMBEDDER_NAME:
        raise UserError(f"the human reward in {directory} was saved by an incompatible version")
    network = _network(len(metadata["likert_objectives"]))
    network.load_state_dict(load_file(str(weights_path)))
    network.eval()
    return HumanReward(network, metadata["likert_objectives"], metadata)


def load_human_reward(directory: str | os.PathLike) -> HumanReward:
    """The reward saved in `directory`, loaded once per process per directory."""
    return _load(Path(directory).expanduser().resolve())


_configured: Path | None = None


def configure_human_reward(directory: str | os.PathLike | None) -> None:
    """Use the reward in `directory` for the `human` objective (None: back to the environment)."""
    global _configured
    _configured = None if directory is None else Path(directory)


def configured_human_reward() -> HumanReward:
    directory = _configured or os.environ.get(PATH_ENV)
    if not directory:
        raise UserError(
            f"the human objective has no trained reward: train one with train_human_reward() "
            f"from exported ratings and set {PATH_ENV} to its directory"
        )
    return load_human_reward(directory)


@register_objective(
    "human",
    description=f"Learned human-preference reward (Bradley-Terry on MiniLM; {PATH_ENV}).",
)
def human(prompts: list[str], responses: list[str]) -> np.ndarray:
    return configured_human_reward().reward(prompts, responses)
