"""The service behind the page, the gradio_client API, the benchmarks and the tests: steer -> score
-> store, sweeps over the weight grid, arena pairs and votes. Plain Python, no gradio.

    service = SteeringService(database_url="sqlite:///data/steering.db")
    w = service.weights([0.7, 0.3, 0.0])                 # parsed once, here at the border
    for item in service.stream("Review a cafe", "clp", w, Decoding(64)):
        ...                                              # str after every token, then a
                                                         # ScoredGeneration (stored)

Inputs are parsed at the border (`weights`, `parse_decoding`, `clean_prompt`) and trusted
inside. Models load once per service, in a background thread (`start_loading`), so a page never
waits for them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from steering.errors import UserError
from steering.evaluation.pareto import simplex_grid
from steering.evaluation.quality import MIN_WORDS
from steering.model.generate import Decoding
from steering.model.methods import (
    available_methods,
    check_method,
    default_adapter_dir,
    shipped_metadata,
    shipped_objectives,
)
from steering.model.mixing import ADAPTER_FILE, adapter_objectives
from steering.objectives import Calibration, load_calibration
from steering.objectives.declared import (
    ObjectiveSet,
    configured_objectives_file,
    resolve_objectives,
)
from steering.prompts import EVAL_PROMPTS, read_prompts
from steering.serve.backends import Backend, Backends, resolve_backend
from steering.serve.frontier import PlotPoint
from steering.serve.hub_sync import HubSync
from steering.weights import Weights
from storage import queries
from storage import repository as repo
from storage.engine import make_engine, upgrade
from storage.journal import Journal, RestoreReport, restore

log = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = 256
MAX_SWEEP_GENERATIONS = 128
SWEEP_STEPS = (0.5, 0.25, 0.2)
TOP_P = 0.95
LOG_DIR_ENV = "STEERING_LOG_DIR"
ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """./data: the working database stays on local disk (SQLite is not safe on a network or
    FUSE mount); what must outlive the container is the ratings log (STEERING_LOG_DIR)."""
    return Path("data")


def default_database_url() -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir() / 'steering.db'}"


def parse_decoding(max_new_tokens, temperature, seed, limit: int = MAX_NEW_TOKENS) -> Decoding:
    """Decoding options as a page or a client sends them, checked against the service's limits.
    Every answer has the quality floor: no stop before MIN_WORDS words, so the conciseness corner
    gives a short answer rather than "Dear Mr." (measured in docs/results.md)."""
    try:
        tokens, temp, seed = int(max_new_tokens), float(temperature), int(seed or 0)
    except (TypeError, ValueError, OverflowError):
        raise UserError("max tokens and seed must be whole numbers, temperature a number") from None
    if not 1 <= tokens <= limit:
        raise UserError(f"max tokens must be between 1 and {limit}, got {tokens}")
    if not 0 <= temp <= 2:
        raise UserError(f"temperature must be between 0 and 2, got {temp}")
    return Decoding(tokens, temp, TOP_P, seed, MIN_WORDS)


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


class SteeringService:
    """The shared backends, the scorers and the database of one app (or one test)."""

    def __init__(
        self,
        database_url: str | None = None,
        objectives: tuple[str, ...] | None = None,
        default_method: str = "clp",
        sweep_batch: int = 8,
        dtype: str | None = None,
        backend: str | None = None,
        backends: Backends | None = None,
        max_prompt_chars: int = MAX_PROMPT_CHARS,
        log_dir: str | os.PathLike | None = None,
        objectives_file: str | None = None,
    ):
        self.database_url = database_url or default_database_url()
        self.objectives = tuple(objectives or shipped_objectives())
        # how each objective scores: the clp adapter's record, checked against this file
        self.objectives_file = configured_objectives_file(objectives_file)
        self._scorers: ObjectiveSet | None = None
        self._scorers_lock = threading.Lock()
        self.default_method = check_method(default_method)
        self.sweep_batch = sweep_batch
        self.dtype = dtype or os.environ.get("STEERING_DTYPE", "auto")
        # single responses stream from this backend (None: llama.cpp when it can serve the
        # model, else torch); batches of weightings always run on torch
        self.backend = backend
        resolve_backend(backend)  # an unknown name fails here, before any request
        self.backends = backends or Backends()
        self.max_prompt_chars = max_prompt_chars
        # every acknowledged vote is appended here too, and the database restored from it
        self.journal = Journal(
            log_dir or os.environ.get(LOG_DIR_ENV) or self.data_dir / "ratings-log"
        )
        self.restored: RestoreReport | None = None
        self._loaded: dict[tuple[str, bool], Backend] = {}
        self._engine = None
        self._engine_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self.load_error: str | None = None
        self._ready = threading.Event()
        self._calibration: Calibration | None | bool = False  # False: not read yet
        self._adapter_sha: dict[Path, str] = {}
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
                engine = make_engine(self.database_url)
                hub = HubSync.from_environment(self.journal.directory)
                if hub:
                    hub.pull()
                # on start, whatever the log holds and the database lacks (a Space restarted
                # with an empty disk) is stored again
                self.restored = restore(engine, self.journal.directory)
                log.info("%s", self.restored)
                if hub:
                    hub.start()
                self._engine = engine
            return self._engine

    @property
    def data_dir(self) -> Path:
        """Where the database lives, when it is a SQLite file; else the default data directory.
        The ratings log and the server's secret are kept here unless configured elsewhere."""
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///")).parent
        return data_dir()

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
            self.scorers.score(["Say hello."], ["Hello there!"])
        except Exception as error:  # noqa: BLE001 (shown on the page; other methods may work)
            log.exception("warm-up failed")
            self.load_error = str(error)
        finally:
            self._ready.set()

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        if self._loader is not None:
            self._loader.join(timeout)
        return self.ready

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def serving_backend(self) -> str:
        """The backend the default method streams from (llamacpp unless it fell back)."""
        return self.steerer(self.default_method).backend

    def steerer(self, method: str, batched: bool = False) -> Backend:
        """The method on the service's backend, or on torch for a batch of weightings: llama.cpp
        holds one set of adapter scales per context, torch mixes a different w per row in one
        batched forward (docs/backends.md)."""
        check_method(method)
        key = (method, batched)
        # loaded once per service, so a fallback to torch is decided (and logged) once
        with self._load_lock:
            if key not in self._loaded:
                backend = "torch" if batched else self.backend
                self._loaded[key] = self.backends.load(method, dtype=self.dtype, backend=backend)
            steerer = self._loaded[key]
        if tuple(steerer.objectives) != self.objectives:
            raise UserError(
                f"the {method} adapter steers {', '.join(steerer.objectives)}, but this app "
                f"steers {', '.join(self.objectives)}"
            )
        return steerer

    def available_methods(self) -> list[str]:
        return available_methods()

    @property
    def scorers(self) -> ObjectiveSet:
        """The objectives' scorers, built once: those the clp adapter was trained with (checked
        against STEERING_OBJECTIVES_FILE when set), else the registered ones of these names."""
        with self._scorers_lock:
            if self._scorers is None:
                metadata = shipped_metadata()
                use_adapter = (
                    metadata is not None and adapter_objectives(metadata) == self.objectives
                )
                scorers = resolve_objectives(
                    self.objectives_file,
                    metadata.training if use_adapter else None,
                    self.objectives,
                    f"the clp adapter in {default_adapter_dir('clp')}",
                )
                if scorers.names != self.objectives:
                    raise UserError(
                        f"this app steers {', '.join(self.objectives)}, but the objectives "
                        f"declared are {', '.join(scorers.names)}"
                    )
                self._scorers = scorers
            return self._scorers

    def objective_description(self, name: str) -> str:
        """What an objective measures, for the page; empty while its scorer cannot be built
        (the status line then says why)."""
        try:
            return self.scorers.select([name]).objectives[0].description
        except UserError:
            return ""

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

    # --- parsing at the border ------------------------------------------------------------------

    def clean_prompt(self, text: str | None) -> tuple[str, str | None]:
        """The prompt to use and a notice when it had to be cut; UserError when empty."""
        if text is not None and not isinstance(text, str):
            raise UserError("the prompt must be text")
        prompt = (text or "").strip()
        if not prompt:
            raise UserError("Type a prompt first: the model was not called.")
        limit = self.max_prompt_chars
        if len(prompt) > limit:
            return prompt[:limit], (
                f"The prompt had {len(prompt):,} characters; only the first {limit:,} were used."
            )
        return prompt, None

    def optional_prompt(self, text: str | None) -> str | None:
        """The cleaned prompt, or None when none was given (a random one is then chosen)."""
        if text is not None and not isinstance(text, str):
            raise UserError("the prompt must be text")
        return self.clean_prompt(text)[0] if (text or "").strip() else None

    def weights(self, values) -> Weights:
        """User-given numbers, one per objective, as a checked, normalised `Weights`."""
        return Weights.parse(self.objectives, values)

    # --- steer -> score -> store ----------------------------------------------------------------

    def _adapter(self, steerer: Backend) -> tuple[str, str | None]:
        if steerer.adapter_dir is None:
            return "base", None
        directory = Path(steerer.adapter_dir)
        if directory not in self._adapter_sha:
            digest = hashlib.sha256((directory / ADAPTER_FILE).read_bytes()).hexdigest()
            self._adapter_sha[directory] = digest
        try:
            shown = str(directory.relative_to(ROOT))
        except ValueError:
            shown = str(directory)
        return shown, self._adapter_sha[directory]

    def score_texts(self, prompt: str, texts: list[str]) -> list[tuple[dict, dict | None]]:
        """(raw, normalised or None) scores of each text, one per objective."""
        raw = self.scorers.score([prompt] * len(texts), texts)
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
        stored_decoding = {
            "max_new_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature,
            "top_p": decoding.top_p,
            "min_words": decoding.min_words,
            "backend": steerer.backend,
        }
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
                    seed=decoding.seed,
                    decoding=stored_decoding,
                    tokens=n,
                    latency_s=seconds,
                    adapter_sha256=adapter_sha,
                    scores={o: (raw[o], z[o]) for o in self.objectives} if z else None,
                )
            except ValueError as error:
                raise UserError(str(error)) from None
            results.append(
                ScoredGeneration(
                    generation_id, prompt, text, steerer.method, w.values, raw, z, n, seconds
                )
            )
        return results

    def stream(
        self, prompt: str, method: str, weights: Weights, decoding: Decoding
    ) -> Iterator[str | ScoredGeneration]:
        """Yield the text so far after every token, then the stored ScoredGeneration."""
        steerer = self.steerer(method)
        start = time.perf_counter()
        text, tokens = "", 0
        for text in steerer.stream(prompt, weights, decoding):
            tokens += 1
            yield text
        seconds = time.perf_counter() - start
        yield self._score_and_store(
            steerer, prompt, [text], [weights], decoding, [tokens], seconds
        )[0]

    def generate(
        self, prompt: str, method: str, rows: list[Weights], decoding: Decoding
    ) -> list[ScoredGeneration]:
        """One batch: a response per weighting row, scored and stored."""
        steerer = self.steerer(method, batched=len(rows) > 1)
        start = time.perf_counter()
        generations = steerer.generate([prompt] * len(rows), rows, decoding)
        seconds = time.perf_counter() - start
        return self._score_and_store(
            steerer,
            prompt,
            [g.text for g in generations],
            rows,
            decoding,
            [g.tokens for g in generations],
            seconds,
        )

    def sweep(
        self, prompt: str, methods: list[str], step: float, decoding: Decoding
    ) -> Iterator[tuple[int, int, list[ScoredGeneration]]]:
        """Yield (done, total, new generations) after every batch of the weight grid."""
        methods = [check_method(m) for m in methods] or [self.default_method]
        if step not in SWEEP_STEPS:
            raise UserError(f"grid step must be one of {', '.join(map(str, SWEEP_STEPS))}")
        grid = Weights.rows(self.objectives, simplex_grid(len(self.objectives), step).tolist())
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
                batch = self.generate(prompt, method, rows, decoding)
                done += len(rows)
                yield done, total, batch

    # --- stored points --------------------------------------------------------------------------

    def plot_points(self, prompt: str | None = None) -> list[PlotPoint]:
        """Stored generations with a normalised score for every objective of this service."""
        points = []
        for p in queries.frontier_points(self.engine, prompt):
            if tuple(p.objectives) != self.objectives or set(p.scores) < set(self.objectives):
                continue
            scores = tuple(p.scores[o] for o in self.objectives)
            points.append(PlotPoint(p.generation_id, p.method, tuple(p.weights), scores, p.text))
        return points
