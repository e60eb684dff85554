"""Reward objectives: a registry of scorers, the built-in objectives, calibration, and the
learned human-preference reward.

    from steering.objectives import score, fit_calibration
    raw = score(["positivity", "conciseness"], prompts, responses)  # {name: (N,) float64}
    r_hat = fit_calibration(raw).normalise(raw)

Built-in objectives (all higher-is-better, all offline; models load on first use, once):

| name             | module     | range     | empty response                      |
|------------------|------------|-----------|-------------------------------------|
| positivity       | text       | [-1, 1]   | 0.0                                 |
| harmlessness     | text       | [0, 1]    | about 0.96 (the classifier's prior) |
| relevance        | embedding  | [-1, 1]   | 0.0                                 |
| answer_relevance | answers    | [-1, 1]   | 0.0                                 |
| passage_relevance| answers    | [-1, 1]   | 0.0                                 |
| conciseness      | text       | [0, 1]    | 1.0                                 |
| brevity          | answers    | [0, 1]    | 0.0                                 |
| brief            | answers    | [0, 1]    | 0.0                                 |
| direct_brevity   | answers    | [0, 1]    | 0.0                                 |
| direct_relevance | answers    | [-1, 1]   | 0.0                                 |
| readability      | text       | [0, 1]    | 0.0                                 |
| fluency          | fluency    | [-20, 0]  | log p(end of sequence) after prompt |
| classifier       | classifier | [0, 1]    | the model's probability for ""      |
| human            | human      | unbounded | the reward model's score for ""     |

Whitespace-only responses behave like empty ones except under fluency and classifier, which see
the whitespace tokens. Emoji, non-English text and 10,000-character responses score finite
values; model-based scorers read only a bounded prefix of very long responses (MiniLM 256 word
pieces, classifier 512 tokens, fluency 2,000 characters). Every score passes through
`Objective.__call__`, which raises instead of letting a NaN or a wrong shape through.
"""

from steering.objectives import (  # noqa: F401 (registers)
    answers,
    classifier,
    embedding,
    fluency,
    human,
    text,
)
from steering.objectives.calibration import (
    CALIBRATION_FILENAME,
    Calibration,
    CorrelationTable,
    ObjectiveStats,
    correlation_table,
    fit_calibration,
    load_calibration,
)
from steering.objectives.classifier import configure_classifier
from steering.objectives.human import (
    MIN_PAIRS,
    HumanReward,
    HumanRewardReport,
    PreferenceRecord,
    configure_human_reward,
    load_human_reward,
    train_human_reward,
)
from steering.objectives.registry import (
    Objective,
    available_objectives,
    get_objective,
    list_objectives_json,
    list_objectives_text,
    register_objective,
    score,
)

# The shipped adapters' objective set: the conflicting directions the objective study chose
# (positivity, conciseness, relevance; docs/objective-study.md), with conciseness and relevance
# in the forms a fragment, a restatement or an off-topic sentence cannot win (docs/objectives.md).
DEFAULT_OBJECTIVES = ("positivity", "brevity", "answer_relevance")

__all__ = [
    "DEFAULT_OBJECTIVES",
    "CALIBRATION_FILENAME",
    "MIN_PAIRS",
    "Calibration",
    "CorrelationTable",
    "HumanReward",
    "HumanRewardReport",
    "Objective",
    "ObjectiveStats",
    "PreferenceRecord",
    "available_objectives",
    "configure_classifier",
    "configure_human_reward",
    "correlation_table",
    "fit_calibration",
    "get_objective",
    "list_objectives_json",
    "list_objectives_text",
    "load_calibration",
    "load_human_reward",
    "register_objective",
    "score",
    "train_human_reward",
]
