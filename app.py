"""The browser app: steer a language model with one slider per objective, watch every generation
land in objective space next to each method's Pareto front, sweep the front over a weight grid,
rate pairs of responses, and follow the ratings on a dashboard.

    make run                  # or `python app.py`: serves on 0.0.0.0:7860 (PORT overrides)

Handlers parse, call steering/ and storage/, and format. The model loads once per process in a
background thread, so a page load never waits for it; every model call shares one concurrency
group with a bounded queue. Data lives in /data when it exists and is writable (a Space's
persistent disk), else ./data; DATABASE_URL overrides. Endpoints for gradio_client: docs/app.md.
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from app_plots import (  # noqa: E402
    PlotPoint,
    empty_figure,
    frontier_figure,
    fronts_by_method,
    hypervolumes,
    scores_figure,
    strengths_figure,
    text_start,
    weights_label,
)
from steering.errors import UserError  # noqa: E402
from steering.evaluate import DEFAULT_REFERENCE  # noqa: E402
from steering.llamacpp import LlamaCppSteerer, backend_of, resolve_backend  # noqa: E402
from steering.llamacpp import load_backend_steerer as _load_steerer  # noqa: E402
from steering.methods import METHODS, Steerer, check_method, default_adapter_dir  # noqa: E402
from steering.mixing import ADAPTER_FILE, METADATA_FILE, check_weights, read_metadata  # noqa: E402
from steering.objectives import (  # noqa: E402
    DEFAULT_OBJECTIVES,
    Calibration,
    get_objective,
    load_calibration,
    score,
)
from steering.pareto import sample_dirichlet, simplex_grid  # noqa: E402
from steering.prompts import EVAL_PROMPTS, read_prompts  # noqa: E402
from storage import repository as repo  # noqa: E402
from storage.engine import make_engine, upgrade  # noqa: E402
from storage.export import export_preferences  # noqa: E402

log = logging.getLogger("app")

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 256
MAX_SWEEP_GENERATIONS = 128
SWEEP_STEPS = (0.5, 0.25, 0.2)
VOTE_CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
# How the per-objective rating question reads; other objectives get a generic question.
ADJECTIVES = {
    "positivity": "positive",
    "conciseness": "concise",
    "relevance": "relevant to the prompt",
    "readability": "readable",
    "fluency": "fluent",
    "harmlessness": "harmless",
    "classifier": "in line with the classifier",
    "human": "preferable",
}
# BrowserState encrypts in the browser with a secret it receives in the page config, so the
# secret hides nothing; keeping it fixed keeps a visitor's anonymous id across server restarts.
RATER_STORAGE_KEY = "steering-rater-id"
RATER_SECRET = "steering-anonymous-rater"
DASHBOARD_TTL_S = 10.0


def data_dir() -> Path:
    """/data when mounted and writable (a Space's persistent storage), else ./data."""
    mounted = Path("/data")
    if mounted.is_dir() and os.access(mounted, os.W_OK):
        return mounted
    return Path("data")


def default_database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir() / 'steering.db'}"


def shipped_objectives() -> tuple[str, ...]:
    """The objectives of the shipped clp adapter (what the sliders steer), read without loading
    the model; the default objective set until the adapter exists."""
    clp = default_adapter_dir("clp")
    if (clp / METADATA_FILE).is_file():
        metadata = read_metadata(clp)
        return tuple(metadata.training.get("objectives", metadata.spec.objectives))
    return tuple(DEFAULT_OBJECTIVES)


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 64
    temperature: float = 0.7
    seed: int = 0
    top_p: float = 0.95

    @classmethod
    def parse(cls, max_new_tokens, temperature, seed) -> Decoding:
        try:
            tokens, temp, seed = int(max_new_tokens), float(temperature), int(seed or 0)
        except (TypeError, ValueError):
            raise UserError(
                "max tokens and seed must be whole numbers, temperature a number"
            ) from None
        if not 1 <= tokens <= MAX_NEW_TOKENS:
            raise UserError(f"max tokens must be between 1 and {MAX_NEW_TOKENS}, got {tokens}")
        if not 0 <= temp <= 2:
            raise UserError(f"temperature must be between 0 and 2, got {temp}")
        return cls(tokens, temp, seed)

    def model_kwargs(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    def stored(self) -> dict:
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }


@dataclass(frozen=True)
class ScoredGeneration:
    """A stored generation with its raw and normalised scores (normalised is None without a
    calibration file)."""

    generation_id: int
    prompt: str
    text: str
    method: str
    weights: tuple[float, ...]
    raw: dict[str, float]
    normalised: dict[str, float] | None
    tokens: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Pair:
    comparison_id: int
    prompt: str
    a: ScoredGeneration
    b: ScoredGeneration


@dataclass(frozen=True)
class VoteCount:
    rating_id: int | None
    yours: int
    total: int


def shown(message: str) -> str:
    """Gradio renders toast and error messages as HTML; ours may quote what a request sent."""
    return html.escape(message, quote=False)


@contextmanager
def friendly_errors():
    """Turn a failure into a gr.Error of one sentence; the app keeps serving."""
    try:
        yield
    except gr.Error:
        raise
    except UserError as error:
        raise gr.Error(shown(str(error))) from None
    except Exception as error:
        log.exception("request failed")
        raise gr.Error(f"The request failed ({type(error).__name__}); please try again.") from None


class SteeringApp:
    """What the handlers call: the shared model, the scorers and the database."""

    def __init__(
        self,
        database_url: str | None = None,
        objectives: tuple[str, ...] | None = None,
        default_method: str = "clp",
        model_concurrency: int = 1,
        queue_size: int = 32,
        sweep_batch: int = 8,
        dtype: str | None = None,
        backend: str | None = None,
    ):
        self.database_url = database_url or default_database_url()
        self.objectives = tuple(objectives or shipped_objectives())
        self.default_method = check_method(default_method)
        self.model_concurrency = model_concurrency
        self.queue_size = queue_size
        self.sweep_batch = sweep_batch
        self.dtype = dtype or os.environ.get("STEERING_DTYPE", "auto")
        # single responses stream from this backend (None: llama.cpp when it can serve the
        # model, else torch); batches of weightings always run on torch
        self.backend = backend
        resolve_backend(backend)  # an unknown name fails here, before any request
        self._steerers: dict[tuple[str, bool], Steerer | LlamaCppSteerer] = {}
        self._engine = None
        self._engine_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self._load_error: str | None = None
        self._ready = threading.Event()
        self._calibration: Calibration | None | bool = False  # False: not read yet
        self._adapter_sha: dict[Path, str] = {}
        self._dashboard: tuple[float, tuple] | None = None
        self._examples: list[str] | None = None

    # --- resources --------------------------------------------------------------------------

    @property
    def engine(self):
        with self._engine_lock:
            if self._engine is None:
                if self.database_url.startswith("sqlite:///"):
                    Path(self.database_url.removeprefix("sqlite:///")).parent.mkdir(
                        parents=True, exist_ok=True
                    )
                upgrade(self.database_url)
                self._engine = make_engine(self.database_url)
            return self._engine

    def start_loading(self) -> None:
        """Load the default method and the scorers in the background (idempotent)."""
        with self._start_lock:
            if self._loader is not None:
                return
            self._loader = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)
            self._loader.start()

    def _warm_up(self) -> None:
        try:
            self.engine  # noqa: B018 (migrates the database)
            self.steerer(self.default_method)
            score(self.objectives, ["Say hello."], ["Hello there!"])
        except Exception as error:  # noqa: BLE001 (shown on the page; other methods may work)
            log.exception("warm-up failed")
            self._load_error = str(error)
        finally:
            self._ready.set()

    def status(self) -> str:
        if not self._ready.is_set():
            return "Loading the model… the page works meanwhile; requests wait for it."
        if self._load_error:
            return f"The {self.default_method} method did not load: {shown(self._load_error)}"
        backend = "llama.cpp" if self.serving_backend() == "llamacpp" else "torch"
        return (
            f"Model ready ({self.default_method} on {backend}; "
            f"objectives: {', '.join(self.objectives)})."
        )

    def serving_backend(self) -> str:
        """The backend the default method streams from (llamacpp unless it fell back)."""
        return backend_of(self.steerer(self.default_method))

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def steerer(self, method: str, batched: bool = False) -> Steerer | LlamaCppSteerer:
        """The method on the app's backend, or on torch for a batch of weightings: llama.cpp
        holds one set of adapter scales per context, torch mixes a different w per row in one
        batched forward (docs/backends.md)."""
        check_method(method)
        key = (method, batched)
        # loaded once per app, so a fallback to torch is decided (and logged) once; the loaders
        # are not safe to enter twice at once
        with self._load_lock:
            if key not in self._steerers:
                backend = "torch" if batched else self.backend
                self._steerers[key] = _load_steerer(method, dtype=self.dtype, backend=backend)
            steerer = self._steerers[key]
        if tuple(steerer.objectives) != self.objectives:
            raise UserError(
                f"the {method} adapter steers {', '.join(steerer.objectives)}, but this app "
                f"steers {', '.join(self.objectives)}"
            )
        return steerer

    def available_methods(self) -> list[str]:
        return [
            m for m in METHODS if m == "base" or (default_adapter_dir(m) / ADAPTER_FILE).is_file()
        ]

    def calibration(self) -> Calibration | None:
        """The shipped clp calibration, used for every method so all share one scale."""
        if self._calibration is False:
            try:
                calibration = load_calibration(default_adapter_dir("clp"))
                missing = set(self.objectives) - set(calibration.objectives)
                self._calibration = None if missing else calibration
            except UserError:
                self._calibration = None
        return self._calibration

    def example_prompts(self) -> list[str]:
        if self._examples is None:
            try:
                self._examples = read_prompts(EVAL_PROMPTS)
            except UserError:
                self._examples = ["Write a short review of a cafe."]
        return self._examples

    # --- parsing ------------------------------------------------------------------------------

    def clean_prompt(self, text: str | None) -> tuple[str, str | None]:
        """The prompt to use and a notice when it had to be cut; UserError when empty."""
        prompt = (text or "").strip()
        if not prompt:
            raise UserError("Type a prompt first: the model was not called.")
        if len(prompt) > MAX_PROMPT_CHARS:
            return prompt[:MAX_PROMPT_CHARS], (
                f"The prompt had {len(prompt):,} characters; only the first "
                f"{MAX_PROMPT_CHARS:,} were used."
            )
        return prompt, None

    def normalise_weights(self, weights) -> tuple[float, ...]:
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise UserError("weights must be numbers") from None
        return tuple(float(w) for w in check_weights(values, len(self.objectives))[0])

    # --- model calls --------------------------------------------------------------------------

    def _adapter(self, steerer: Steerer | LlamaCppSteerer) -> tuple[str, str | None]:
        if steerer.adapter_dir is None:
            return "base", None
        directory = Path(steerer.adapter_dir)
        if directory not in self._adapter_sha:
            digest = hashlib.sha256((directory / ADAPTER_FILE).read_bytes()).hexdigest()
            self._adapter_sha[directory] = digest
        try:
            shown = str(directory.relative_to(Path(__file__).resolve().parent))
        except ValueError:
            shown = str(directory)
        return shown, self._adapter_sha[directory]

    def score_texts(self, prompt: str, texts: list[str]) -> list[tuple[dict, dict | None]]:
        raw = score(self.objectives, [prompt] * len(texts), texts)
        calibration = self.calibration()
        normalised = calibration.normalise(raw) if calibration else None
        return [
            (
                {o: float(raw[o][i]) for o in self.objectives},
                {o: float(normalised[o][i]) for o in self.objectives} if normalised else None,
            )
            for i in range(len(texts))
        ]

    def _score_and_store(self, steerer, prompt, texts, weights, decoding, tokens, seconds):
        adapter_id, adapter_sha = self._adapter(steerer)
        results = []
        for text, w, n, (raw, z) in zip(
            texts, weights, tokens, self.score_texts(prompt, texts), strict=True
        ):
            text = text.replace("\x00", "")
            try:
                generation_id = repo.add_generation(
                    self.engine,
                    prompt,
                    text,
                    steerer.method,
                    adapter_id,
                    w,
                    self.objectives,
                    seed=decoding.seed,
                    decoding={**decoding.stored(), "backend": backend_of(steerer)},
                    tokens=n,
                    latency_s=seconds,
                    adapter_sha256=adapter_sha,
                    scores={o: (raw[o], z[o]) for o in self.objectives} if z else None,
                )
            except ValueError as error:
                raise UserError(str(error)) from None
            results.append(
                ScoredGeneration(
                    generation_id, prompt, text, steerer.method, tuple(w), raw, z, n, seconds
                )
            )
        return results

    def stream(self, prompt: str, method: str, weights, decoding: Decoding):
        """Yield the text so far after every token, then the stored ScoredGeneration."""
        steerer = self.steerer(method)
        w = self.normalise_weights(weights)
        start = time.perf_counter()
        text, tokens = "", 0
        for text in steerer.stream(prompt, w, **decoding.model_kwargs()):
            tokens += 1
            yield text
        seconds = time.perf_counter() - start
        yield self._score_and_store(steerer, prompt, [text], [w], decoding, [tokens], seconds)[0]

    def generate(
        self, prompt: str, method: str, rows, decoding: Decoding
    ) -> list[ScoredGeneration]:
        """One batch: a response per weighting row, scored and stored."""
        steerer = self.steerer(method, batched=len(rows) > 1)
        start = time.perf_counter()
        generations = steerer.generate([prompt] * len(rows), rows, **decoding.model_kwargs())
        seconds = time.perf_counter() - start
        return self._score_and_store(
            steerer,
            prompt,
            [g.text for g in generations],
            [g.weights for g in generations],
            decoding,
            [g.tokens for g in generations],
            seconds,
        )

    def sweep(self, prompt: str, methods: list[str], step: float, decoding: Decoding):
        """Yield (done, total, new generations) after every batch of the weight grid."""
        methods = [check_method(m) for m in methods] or [self.default_method]
        if step not in SWEEP_STEPS:
            raise UserError(f"grid step must be one of {', '.join(map(str, SWEEP_STEPS))}")
        grid = simplex_grid(len(self.objectives), step)
        total = len(grid) * len(methods)
        if total > MAX_SWEEP_GENERATIONS:
            raise UserError(
                f"that sweep needs {total} generations; the limit is {MAX_SWEEP_GENERATIONS}, "
                "so choose a coarser grid or fewer methods"
            )
        done = 0
        for method in methods:
            for start in range(0, len(grid), self.sweep_batch):
                rows = grid[start : start + self.sweep_batch]
                batch = self.generate(prompt, method, rows.tolist(), decoding)
                done += len(rows)
                yield done, total, batch

    def new_pair(self, prompt: str | None, decoding: Decoding, seed: int | None = None) -> Pair:
        """Two fresh generations for one prompt with random weightings and methods, compared."""
        rng = random.Random(seed)
        prompt = prompt or rng.choice(self.example_prompts())
        methods = self.available_methods()
        method_a, method_b = rng.choice(methods), rng.choice(methods)
        w_a, w_b = sample_dirichlet(len(self.objectives), 2, rng=rng.randrange(2**32)).tolist()
        decoding = Decoding(decoding.max_new_tokens, decoding.temperature, rng.randrange(2**31))
        if method_a == method_b:
            a, b = self.generate(prompt, method_a, [w_a, w_b], decoding)
        else:
            (a,) = self.generate(prompt, method_a, [w_a], decoding)
            (b,) = self.generate(prompt, method_b, [w_b], decoding)
        try:
            comparison_id = repo.add_comparison(self.engine, a.generation_id, b.generation_id)
        except ValueError as error:
            raise UserError(str(error)) from None
        return Pair(comparison_id, prompt, a, b)

    # --- storage --------------------------------------------------------------------------------

    def rate(
        self,
        comparison_id: int,
        choice: str,
        anonymous_id: str,
        rating_uuid: str | None = None,
        per_objective: dict | None = None,
        user_name: str | None = None,
    ) -> VoteCount:
        if choice not in VOTE_CHOICES:
            raise UserError(f"choice must be one of {', '.join(VOTE_CHOICES)}, got {choice!r}")
        answers = {o: c for o, c in (per_objective or {}).items() if c}
        for objective, answer in answers.items():
            if objective not in self.objectives:
                raise UserError(f"{objective!r} is not one of {', '.join(self.objectives)}")
            if answer not in ("a", "b", "tie"):
                raise UserError(f"the answer for {objective} must be a, b or tie, got {answer!r}")
        try:
            rater = repo.ensure_rater(self.engine, anonymous_id, user_name)
            rating_id = repo.add_rating(
                self.engine,
                int(comparison_id),
                rater,
                choice,
                rating_uuid=rating_uuid or uuid.uuid4(),
                per_objective=answers,
            )
        except repo.DuplicateVoteError:
            raise UserError("You have already voted on this pair: one vote per pair.") from None
        except ValueError as error:
            raise UserError(str(error)) from None
        yours, total = self.vote_counts(anonymous_id)
        return VoteCount(rating_id, yours, total)

    def vote_counts(self, anonymous_id: str | None) -> tuple[int, int]:
        counts = repo.rater_counts(self.engine)
        yours = sum(c.ratings for c in counts if c.anonymous_id == anonymous_id)
        return yours, sum(c.ratings for c in counts)

    def plot_points(self, prompt: str | None = None) -> list[PlotPoint]:
        """Stored generations with a normalised score for every objective of this app."""
        points = []
        for p in repo.frontier_points(self.engine, prompt):
            if tuple(p.objectives) != self.objectives or set(p.scores) < set(self.objectives):
                continue
            scores = tuple(p.scores[o] for o in self.objectives)
            points.append(PlotPoint(p.generation_id, p.method, tuple(p.weights), scores, p.text))
        return points

    def frontier(self, prompt: str | None = None, highlight: int | None = None, title: str = ""):
        points = self.plot_points(prompt)
        figure = frontier_figure(
            points,
            self.objectives,
            highlight,
            title or "This prompt's generations",
            DEFAULT_REFERENCE,
        )
        return points, figure

    def dashboard(self, fresh: bool = False) -> tuple:
        """Counts, win rates, strengths, human steerability and the frontier of everything
        stored; cached for a few seconds because every open dashboard polls it."""
        now = time.monotonic()
        if not fresh and self._dashboard and now - self._dashboard[0] < DASHBOARD_TTL_S:
            return self._dashboard[1]
        engine = self.engine
        raters = repo.rater_counts(engine)
        points, figure = self.frontier(None, title="All stored generations")
        everything = repo.frontier_points(engine)
        counts = (
            f"**{len(everything)}** generations · **{len({p.prompt for p in everything})}** "
            f"prompts · **{sum(r.ratings for r in raters)}** ratings by "
            f"**{sum(1 for r in raters if r.ratings)}** raters"
        )
        wins = [
            [
                w.key,
                w.wins,
                w.losses,
                w.ties,
                w.both_bad,
                None if w.rate is None else round(w.rate, 3),
            ]
            for w in repo.win_rates(engine, by="method")
        ]
        strengths = repo.bradley_terry(engine)
        bt = [
            [s.method, round(s.strength, 3), round(s.low, 3), round(s.high, 3), s.comparisons]
            for s in strengths
        ]
        steer = []
        for objective in self.objectives:
            s = repo.human_steerability(engine, objective)
            steer.append(
                [
                    objective,
                    s.agree,
                    s.disagree,
                    s.ties,
                    None if s.rate is None else round(s.rate, 3),
                ]
            )
        result = (counts, wins, bt, strengths_figure(strengths), steer, figure)
        self._dashboard = (now, result)
        return result

    def export_file(self, objective: str | None = None) -> Path:
        target = Path(tempfile.mkdtemp(prefix="ratings-")) / "ratings.jsonl"
        try:
            export_preferences(self.engine, target, "jsonl", objective or None)
        except ValueError as error:
            raise UserError(str(error)) from None
        return target


# --- formatting --------------------------------------------------------------------------------


def point_choices(points: list[PlotPoint], objectives) -> list[tuple[str, int]]:
    """Dropdown entries, newest first; labels are shown as text, never as markup."""
    return [
        (
            f"#{p.generation_id} {p.method} [{weights_label(objectives, p.weights)}] "
            f"{text_start(p.text, 60)}",
            p.generation_id,
        )
        for p in reversed(points)
    ]


def hypervolume_line(points: list[PlotPoint]) -> str:
    hv = hypervolumes(points, DEFAULT_REFERENCE)
    if not hv:
        return ""
    parts = " · ".join(f"{m}: **{v:.3g}**" for m, v in hv.items())
    return f"Hypervolume per method (reference {DEFAULT_REFERENCE:g} on every objective): {parts}"


def question(objective: str) -> str:
    adjective = ADJECTIVES.get(objective)
    return f"Which is more {adjective}?" if adjective else f"Which does better on {objective}?"


def reveal(pair: dict, objectives) -> str:
    lines = ["**Revealed:**"]
    for side in ("a", "b"):
        g = pair[side]
        lines.append(
            f"- **{side.upper()}**: method `{g['method']}`, weights "
            f"{weights_label(objectives, g['weights'])}"
        )
    return "\n".join(lines)


# --- UI handlers (plain functions of the app and the component values) -------------------------


def ui_used_weights(app: SteeringApp, *weights) -> list:
    try:
        return list(app.normalise_weights(weights))
    except UserError:
        return [None] * len(app.objectives)


def ui_generate(
    app: SteeringApp,
    prompt,
    method,
    max_tokens,
    temperature,
    seed,
    *weights,
    quiet_if_empty: bool = False,
):
    """Stream the response; then the scores, the prompt's frontier and the point chooser."""
    skip = (gr.skip(),) * 4
    if not (prompt or "").strip():
        if not quiet_if_empty:
            gr.Warning("Type a prompt first: the model was not called.")
        yield (gr.skip(), *skip)
        return
    with friendly_errors():
        prompt, notice = app.clean_prompt(prompt)
        if notice:
            gr.Warning(shown(notice))
        decoding = Decoding.parse(max_tokens, temperature, seed)
        for item in app.stream(prompt, method, weights, decoding):
            if isinstance(item, str):
                yield (item, *skip)
                continue
            points, figure = app.frontier(prompt, highlight=item.generation_id)
            yield (
                item.text,
                scores_figure(app.objectives, item.raw, item.normalised),
                figure,
                hypervolume_line(points),
                gr.update(choices=point_choices(points, app.objectives), value=None),
            )


def ui_sweep(app: SteeringApp, prompt, methods, step, max_tokens, temperature, seed, progress):
    """Sweep the grid batch by batch, redrawing the frontier and reporting progress."""
    if not (prompt or "").strip():
        gr.Warning("Type a prompt first: the model was not called.")
        yield gr.skip(), gr.skip(), gr.skip()
        return
    with friendly_errors():
        prompt, notice = app.clean_prompt(prompt)
        if notice:
            gr.Warning(shown(notice))
        decoding = Decoding.parse(max_tokens, temperature, seed)
        progress(0, desc="Sweeping the weight grid")
        for done, total, _ in app.sweep(prompt, list(methods or []), float(step), decoding):
            progress((done, total), desc=f"{done}/{total} generations")
            points, figure = app.frontier(prompt, title="This prompt's generations")
            yield (
                figure,
                hypervolume_line(points),
                gr.update(choices=point_choices(points, app.objectives), value=None),
            )


def ui_show_point(app: SteeringApp, generation_id, prompt) -> tuple[str, str]:
    if generation_id is None:
        return "", ""
    with friendly_errors():
        cleaned = app.clean_prompt(prompt)[0] if (prompt or "").strip() else None
        for point in app.plot_points(cleaned) or app.plot_points(None):
            if point.generation_id == int(generation_id):
                scores = ", ".join(
                    f"{o} {s:+.2f}" for o, s in zip(app.objectives, point.scores, strict=True)
                )
                return point.text, (
                    f"#{point.generation_id} · `{point.method}` · weights "
                    f"{weights_label(app.objectives, point.weights)} · {scores}"
                )
    return "", "That generation is not in the plot any more."


def ui_rater_id(current) -> str:
    return current if isinstance(current, str) and current else str(uuid.uuid4())


def ui_new_pair(app: SteeringApp, prompt, max_tokens, temperature, rater):
    with friendly_errors():
        cleaned = app.clean_prompt(prompt)[0] if (prompt or "").strip() else None
        decoding = Decoding.parse(max_tokens, temperature, 0)
        pair = app.new_pair(cleaned, decoding)
    state = {
        "comparison_id": pair.comparison_id,
        "a": {"method": pair.a.method, "weights": pair.a.weights},
        "b": {"method": pair.b.method, "weights": pair.b.weights},
    }
    yours, total = app.vote_counts(rater)
    buttons = [gr.update(interactive=True)] * len(VOTE_CHOICES)
    radios = [gr.update(value=None)] * len(app.objectives)
    return (
        state,
        pair.prompt,
        pair.a.text,
        pair.b.text,
        "",
        vote_line(yours, total),
        *buttons,
        *radios,
    )


def vote_line(yours: int, total: int) -> str:
    return f"Your votes: **{yours}** · all votes: **{total}**"


def ui_vote(app: SteeringApp, choice, profile, pair, rater, *answers):
    """Store the vote (the server refuses a second one on the same pair), then reveal."""
    n_buttons = len(VOTE_CHOICES)
    if not pair:
        gr.Warning("Ask for a new pair first.")
        return (gr.skip(),) * (3 + n_buttons)
    rater = ui_rater_id(rater)
    user_name = getattr(profile, "username", None) if profile is not None else None
    per_objective = dict(zip(app.objectives, answers, strict=True))
    with friendly_errors():
        counts = app.rate(pair["comparison_id"], choice, rater, None, per_objective, user_name)
    disabled = [gr.update(interactive=False)] * n_buttons
    return (reveal(pair, app.objectives), vote_line(counts.yours, counts.total), rater, *disabled)


def ui_dashboard(app: SteeringApp, fresh: bool = False):
    with friendly_errors():
        return app.dashboard(fresh)


def ui_export(app: SteeringApp) -> str:
    with friendly_errors():
        return str(app.export_file())


def ui_status(app: SteeringApp):
    app.start_loading()
    return app.status(), gr.Timer(active=not app.ready)


# --- API endpoints (typed: gradio_client sees the parameter names) ------------------------------


class Api:
    """The named endpoints; docs/app.md shows each called from gradio_client."""

    def __init__(self, app: SteeringApp):
        self.app = app

    def generate(
        self,
        prompt: str,
        weights: list[float],
        method: str = "clp",
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> Iterator[dict]:
        """Stream {"text", "done": false} after every token, then the stored generation with
        "done": true, its id, the normalised weights used and raw and normalised scores."""
        with friendly_errors():
            prompt, notice = self.app.clean_prompt(prompt)
            decoding = Decoding.parse(max_new_tokens, temperature, seed)
            for item in self.app.stream(prompt, method, weights, decoding):
                if isinstance(item, str):
                    yield {"text": item, "done": False}
                else:
                    yield {**item.to_json(), "done": True, "notice": notice}

    def sweep(
        self,
        prompt: str,
        methods: list[str] | None = None,
        step: float = 0.5,
        max_new_tokens: int = 64,
        temperature: float = 0.7,
        seed: int = 0,
    ) -> dict:
        """Generate over the simplex grid with this step for each method; return the new
        generations, every stored point of the prompt and the hypervolume per method."""
        with friendly_errors():
            prompt, _ = self.app.clean_prompt(prompt)
            decoding = Decoding.parse(max_new_tokens, temperature, seed)
            made = []
            for _, _, batch in self.app.sweep(prompt, list(methods or []), step, decoding):
                made += [g.to_json() for g in batch]
            return {"generations": made, **self.frontier(prompt)}

    def score(self, prompt: str, response: str) -> dict:
        """Raw and normalised (null without a calibration) scores of one response."""
        with friendly_errors():
            prompt, _ = self.app.clean_prompt(prompt)
            raw, normalised = self.app.score_texts(prompt, [response])[0]
            return {
                o: {"raw": raw[o], "normalised": normalised[o] if normalised else None}
                for o in self.app.objectives
            }

    def pair(self, prompt: str = "", max_new_tokens: int = 64, temperature: float = 0.7) -> dict:
        """A new comparison: two responses to one prompt, their weights and methods hidden."""
        with friendly_errors():
            cleaned = self.app.clean_prompt(prompt)[0] if prompt.strip() else None
            pair = self.app.new_pair(cleaned, Decoding.parse(max_new_tokens, temperature, 0))
            return {
                "comparison_id": pair.comparison_id,
                "prompt": pair.prompt,
                "a": pair.a.text,
                "b": pair.b.text,
            }

    def rate(
        self,
        comparison_id: int,
        choice: str,
        rater_id: str,
        rating_uuid: str = "",
        per_objective: dict[str, str] | None = None,
    ) -> dict:
        """Vote a, b, tie or both_bad; a second vote by the same rater on a pair is refused.
        Resending the same rating_uuid with the same vote is a no-op."""
        with friendly_errors():
            counts = self.app.rate(
                comparison_id, choice, rater_id, rating_uuid or None, per_objective
            )
            return {
                "rating_id": counts.rating_id,
                "your_votes": counts.yours,
                "total_votes": counts.total,
            }

    def frontier(self, prompt: str = "") -> dict:
        """Stored points of a prompt (all prompts when empty) with their method's front flag."""
        with friendly_errors():
            cleaned = self.app.clean_prompt(prompt)[0] if prompt.strip() else None
            points = self.app.plot_points(cleaned)
            front = {
                points[i].generation_id for idx in fronts_by_method(points).values() for i in idx
            }
            return {
                "objectives": list(self.app.objectives),
                "reference": DEFAULT_REFERENCE,
                "hypervolume": hypervolumes(points, DEFAULT_REFERENCE),
                "points": [
                    {**asdict(p), "non_dominated": p.generation_id in front} for p in points
                ],
            }

    def export(self, objective: str = "") -> str:
        """Every rating as JSON Lines (prompt, chosen, rejected, weights, scores, votes)."""
        with friendly_errors():
            return self.app.export_file(objective or None).read_text(encoding="utf-8")


# --- layout --------------------------------------------------------------------------------------


def build_demo(app: SteeringApp) -> gr.Blocks:
    objectives = app.objectives
    api = Api(app)
    model = {"concurrency_id": "model", "concurrency_limit": app.model_concurrency}
    private = {"api_visibility": "private"}
    examples = app.example_prompts()[:: max(1, len(app.example_prompts()) // 6)][:6]

    with gr.Blocks(title="Steerable language model") as demo:
        gr.Markdown(
            "# Steer a language model\nOne slider per objective: the model's trade-off "
            "between them is chosen at inference time (a Conditional Language Policy)."
        )
        status = gr.Markdown(app.status(), elem_id="status")
        status_timer = gr.Timer(2.0)
        rater = gr.BrowserState(None, storage_key=RATER_STORAGE_KEY, secret=RATER_SECRET)

        with gr.Tab("Explore and sweep"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(
                        label="Prompt",
                        lines=3,
                        elem_id="prompt",
                        placeholder="Ask for a review, a note, a story…",
                    )
                    gr.Examples(examples=[[e] for e in examples], inputs=[prompt])
                    method = gr.Radio(
                        list(METHODS),
                        value=app.default_method,
                        label="Method",
                        elem_id="method",
                        info=(
                            "logits (logit mixing) always runs on torch; llama.cpp serves the "
                            "others when installed. Sweeps run on torch, all weightings in one "
                            "batch."
                        ),
                    )
                    sliders, used = [], []
                    for name in objectives:
                        with gr.Row(equal_height=True):
                            sliders.append(
                                gr.Slider(
                                    0,
                                    1,
                                    value=round(1 / len(objectives), 2),
                                    step=0.05,
                                    label=name,
                                    info=get_objective(name).description,
                                    scale=4,
                                    elem_id=f"w-{name}",
                                )
                            )
                            used.append(
                                gr.Number(
                                    value=round(1 / len(objectives), 3),
                                    label="used",
                                    interactive=False,
                                    precision=3,
                                    scale=1,
                                    min_width=80,
                                    elem_id=f"used-{name}",
                                )
                            )
                    with gr.Accordion("Decoding", open=False, elem_id="decoding"):
                        max_tokens = gr.Slider(
                            1,
                            MAX_NEW_TOKENS,
                            value=64,
                            step=1,
                            label="Max new tokens",
                            elem_id="max-tokens",
                        )
                        temperature = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Temperature")
                        seed = gr.Number(0, precision=0, label="Seed")
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Accordion("Sweep the front", open=True):
                        sweep_methods = gr.CheckboxGroup(
                            list(METHODS), value=[app.default_method], label="Methods to sweep"
                        )
                        step = gr.Radio(list(SWEEP_STEPS), value=0.5, label="Grid step")
                        sweep_btn = gr.Button("Sweep the front", elem_id="sweep")
                with gr.Column(scale=3):
                    response = gr.Textbox(
                        label="Response",
                        lines=8,
                        interactive=False,
                        elem_id="response",
                        buttons=["copy"],
                    )
                    scores_plot = gr.Plot(label="Scores", elem_id="scores")
                    frontier_plot = gr.Plot(
                        empty_figure("Generate to add points."),
                        label="Pareto frontier of this prompt",
                        elem_id="frontier",
                    )
                    hv = gr.Markdown(elem_id="hypervolume")
                    chooser = gr.Dropdown(
                        [], label="Choose a point to read its full text", elem_id="chooser"
                    )
                    point_meta = gr.Markdown()
                    point_text = gr.Textbox(
                        label="Full text", lines=6, interactive=False, elem_id="point-text"
                    )

        with gr.Tab("Rate"):
            gr.Markdown(
                "Two responses to one prompt, made with different weights or methods. "
                "Which is better? The settings are revealed after your vote."
            )
            if os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"):
                gr.LoginButton()
            with gr.Row():
                rate_prompt_in = gr.Textbox(label="Prompt (empty: a random one)", scale=4)
                pair_btn = gr.Button("New pair", variant="primary", scale=1, elem_id="new-pair")
            pair_state = gr.State(None)
            rate_prompt = gr.Textbox(label="Prompt", interactive=False)
            with gr.Row():
                text_a = gr.Textbox(label="A", lines=8, interactive=False, elem_id="text-a")
                text_b = gr.Textbox(label="B", lines=8, interactive=False, elem_id="text-b")
            with gr.Row():
                vote_buttons = {
                    c: gr.Button(label, interactive=False, elem_id=f"vote-{c}")
                    for c, label in VOTE_CHOICES.items()
                }
            with gr.Accordion("Per objective (optional, answer before voting)", open=False):
                answers = [
                    gr.Radio(
                        [("A", "a"), ("B", "b"), ("Same", "tie")], value=None, label=question(o)
                    )
                    for o in objectives
                ]
            revealed = gr.Markdown(elem_id="reveal")
            votes = gr.Markdown(vote_line(0, 0), elem_id="votes")

        with gr.Tab("Dashboard") as dashboard_tab:
            counts = gr.Markdown(elem_id="counts")
            with gr.Row():
                wins = gr.Dataframe(
                    headers=["method", "wins", "losses", "ties", "both bad", "win rate"],
                    label="Win rates per method",
                )
                strengths = gr.Dataframe(
                    headers=["method", "strength", "low", "high", "comparisons"],
                    label="Bradley-Terry",
                )
            strength_plot = gr.Plot(label="Strengths")
            steer = gr.Dataframe(
                headers=["objective", "agree", "disagree", "ties", "rate"],
                label="Human steerability: when A had the higher weight on an "
                "objective, how often raters judged A stronger on it",
            )
            all_frontier = gr.Plot(label="Frontier of all stored generations")
            with gr.Row():
                refresh = gr.Button("Refresh")
                export_btn = gr.Button("Export ratings (JSONL)")
            export_file = gr.File(label="Ratings export")
            dashboard_timer = gr.Timer(30.0)

        # --- events ---
        weights_in = [*sliders]
        decoding_in = [max_tokens, temperature, seed]
        status_timer.tick(
            lambda: ui_status(app),
            None,
            [status, status_timer],
            **private,
            queue=False,
            show_progress="hidden",
        )
        demo.load(
            lambda: ui_status(app),
            None,
            [status, status_timer],
            **private,
            queue=False,
            show_progress="hidden",
        )
        demo.load(ui_rater_id, rater, rater, **private, queue=False)
        demo.load(lambda r: vote_line(*app.vote_counts(r)), rater, votes, **private)

        def used_weights(*w):
            return ui_used_weights(app, *w)

        for slider in sliders:
            slider.input(
                used_weights,
                weights_in,
                used,
                **private,
                queue=False,
                trigger_mode="always_last",
                show_progress="hidden",
            )

        generate_outputs = [response, scores_plot, frontier_plot, hv, chooser]

        def generate(prompt, method, max_tokens, temperature, seed, *weights):
            yield from ui_generate(app, prompt, method, max_tokens, temperature, seed, *weights)

        def regenerate(prompt, method, max_tokens, temperature, seed, *weights):
            yield from ui_generate(
                app, prompt, method, max_tokens, temperature, seed, *weights, quiet_if_empty=True
            )

        generate_in = [prompt, method, *decoding_in, *weights_in]
        for trigger in (generate_btn.click, prompt.submit):
            trigger(
                generate,
                generate_in,
                generate_outputs,
                **model,
                **private,
                api_name="ui_generate",
                trigger_mode="always_last",
            )
        for slider in sliders:
            # release, not change: a drag produces dozens of changes but one release
            slider.release(
                regenerate,
                generate_in,
                generate_outputs,
                **model,
                **private,
                api_name="ui_regenerate",
                trigger_mode="always_last",
            )

        def sweep(prompt, methods, step, max_tokens, temperature, seed, progress=gr.Progress()):  # noqa: B008
            yield from ui_sweep(app, prompt, methods, step, max_tokens, temperature, seed, progress)

        sweep_btn.click(
            sweep,
            [prompt, sweep_methods, step, *decoding_in],
            [frontier_plot, hv, chooser],
            **model,
            **private,
            api_name="ui_sweep",
        )
        chooser.change(
            lambda g, p: ui_show_point(app, g, p),
            [chooser, prompt],
            [point_text, point_meta],
            **private,
        )

        pair_btn.click(
            lambda p, m, t, r: ui_new_pair(app, p, m, t, r),
            [rate_prompt_in, max_tokens, temperature, rater],
            [
                pair_state,
                rate_prompt,
                text_a,
                text_b,
                revealed,
                votes,
                *vote_buttons.values(),
                *answers,
            ],
            **model,
            **private,
        )
        for choice, button in vote_buttons.items():

            def vote(profile: gr.OAuthProfile | None, pair, rater_id, *given, choice=choice):
                return ui_vote(app, choice, profile, pair, rater_id, *given)

            button.click(
                vote,
                [pair_state, rater, *answers],
                [revealed, votes, rater, *vote_buttons.values()],
                **private,
            )

        dashboard_out = [counts, wins, strengths, strength_plot, steer, all_frontier]
        for trigger in (dashboard_timer.tick, demo.load):
            trigger(
                lambda: ui_dashboard(app), None, dashboard_out, **private, show_progress="hidden"
            )
        for trigger in (refresh.click, dashboard_tab.select):
            trigger(lambda: ui_dashboard(app, fresh=True), None, dashboard_out, **private)
        export_btn.click(lambda: ui_export(app), None, export_file, **private)

        gr.api(api.generate, api_name="generate", **model)
        gr.api(api.sweep, api_name="sweep", **model)
        gr.api(api.pair, api_name="pair", **model)
        gr.api(api.score, api_name="score", concurrency_id="scorers", concurrency_limit=2)
        gr.api(api.rate, api_name="rate")
        gr.api(api.frontier, api_name="frontier")
        gr.api(api.export, api_name="export")

    demo.queue(max_size=app.queue_size, default_concurrency_limit=4)
    return demo


steering_app = SteeringApp()
demo = build_demo(steering_app)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    steering_app.start_loading()
    demo.launch(server_name="0.0.0.0", server_port=int(os.environ.get("PORT", "7860")))


if __name__ == "__main__":
    main()
