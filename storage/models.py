"""ORM schema: prompts, generations, scores, comparisons, raters and ratings.

The tables are created and changed only by the Alembic revisions in `storage/migrations/`;
`tests/storage/test_migrations.py` checks that the head revision matches this module exactly.
Nothing outside `storage/` sees these classes: `storage.repository` returns frozen dataclasses.
"""

from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Size limits, checked by storage.repository before anything is written (docs/storage.md lists them).
# The name limits are also the column widths, so PostgreSQL enforces them a second time.
MAX_PROMPT_CHARS = 8_000
MAX_TEXT_CHARS = 32_000
MAX_NAME_CHARS = 64
MAX_ADAPTER_ID_CHARS = 256
MAX_RATER_ID_CHARS = 128
MAX_USER_NAME_CHARS = 128
MAX_DECODING_JSON_CHARS = 4_096
MAX_OBJECTIVES = 16

CHOICES = ("a", "b", "tie", "both_bad")
OBJECTIVE_CHOICES = ("a", "b", "tie")


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    # Deterministic constraint names: SQLite batch migrations can only drop or alter what they can name.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Prompt(Base):
    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Prompts are deduplicated on a digest because PostgreSQL cannot index long text in a b-tree.
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(MAX_NAME_CHARS), index=True)
    adapter_id: Mapped[str] = mapped_column(String(MAX_ADAPTER_ID_CHARS))
    adapter_sha256: Mapped[str | None] = mapped_column(String(64))
    # objectives[k] names the objective that weights[k] steers; both are JSON lists of equal length.
    objectives: Mapped[list[str]] = mapped_column(JSON)
    weights: Mapped[list[float]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger)
    decoding: Mapped[dict[str, object]] = mapped_column(JSON)
    tokens: Mapped[int] = mapped_column(Integer)
    latency_s: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    scores: Mapped[list["Score"]] = relationship()


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("generation_id", "objective"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    objective: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    raw: Mapped[float] = mapped_column(Float)
    normalised: Mapped[float] = mapped_column(Float)


class Comparison(Base):
    __tablename__ = "comparisons"
    __table_args__ = (
        CheckConstraint("generation_a_id <> generation_b_id", name="distinct_generations"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    generation_a_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    generation_b_id: Mapped[int] = mapped_column(ForeignKey("generations.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Rater(Base):
    __tablename__ = "raters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    anonymous_id: Mapped[str] = mapped_column(String(MAX_RATER_ID_CHARS), unique=True)
    user_name: Mapped[str | None] = mapped_column(String(MAX_USER_NAME_CHARS))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (
        # One vote per rater per comparison; storage.repository reports a clash as DuplicateVoteError.
        UniqueConstraint("comparison_id", "rater_id"),
        CheckConstraint("choice IN ('a', 'b', 'tie', 'both_bad')", name="choice"),
        Index(None, "rater_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Client-supplied: a resubmitted rating carries the same UUID and is stored once.
    uuid: Mapped[UUID] = mapped_column(Uuid, unique=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    choice: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    objectives: Mapped[list["RatingObjective"]] = relationship()


class RatingObjective(Base):
    """The optional per-objective part of a rating: which side is more <objective>, and how much.

    `likert` is comparative: 1 = A much more, 2 = A somewhat more, 3 = about the same,
    4 = B somewhat more, 5 = B much more.
    """

    __tablename__ = "rating_objectives"
    __table_args__ = (
        UniqueConstraint("rating_id", "objective"),
        CheckConstraint("choice IS NULL OR choice IN ('a', 'b', 'tie')", name="choice"),
        CheckConstraint("likert IS NULL OR likert BETWEEN 1 AND 5", name="likert"),
        CheckConstraint("choice IS NOT NULL OR likert IS NOT NULL", name="not_empty"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id"))
    objective: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    choice: Mapped[str | None] = mapped_column(String(4))
    likert: Mapped[int | None] = mapped_column(SmallInteger)


class RatingUndo(Base):
    """A vote its rater took back: the rating row is gone (so the rater may vote again), and
    this row keeps what it said and when it was cast and undone."""

    __tablename__ = "rating_undos"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[UUID] = mapped_column(Uuid, unique=True)  # the undone rating's UUID
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("raters.id"))
    choice: Mapped[str] = mapped_column(String(8))
    # objective -> [choice or null, likert or null], as the rating had them
    per_objective: Mapped[dict[str, list]] = mapped_column(JSON)
    rated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    undone_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
