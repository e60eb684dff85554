"""Initial schema: prompts, generations, scores, comparisons, raters, ratings.

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompts"),
        sa.UniqueConstraint("sha256", name="uq_prompts_sha256"),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("adapter_id", sa.String(256), nullable=False),
        sa.Column("adapter_sha256", sa.String(64), nullable=True),
        sa.Column("objectives", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("decoding", sa.JSON(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name="fk_generations_prompt_id_prompts"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_generations"),
    )
    op.create_index("ix_generations_prompt_id", "generations", ["prompt_id"])
    op.create_index("ix_generations_method", "generations", ["method"])
    op.create_table(
        "scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation_id", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(64), nullable=False),
        sa.Column("raw", sa.Float(), nullable=False),
        sa.Column("normalised", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["generation_id"], ["generations.id"], name="fk_scores_generation_id_generations"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_scores"),
        sa.UniqueConstraint("generation_id", "objective", name="uq_scores_generation_id_objective"),
    )
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("generation_a_id", sa.Integer(), nullable=False),
        sa.Column("generation_b_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "generation_a_id <> generation_b_id", name="ck_comparisons_distinct_generations"
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name="fk_comparisons_prompt_id_prompts"
        ),
        sa.ForeignKeyConstraint(
            ["generation_a_id"],
            ["generations.id"],
            name="fk_comparisons_generation_a_id_generations",
        ),
        sa.ForeignKeyConstraint(
            ["generation_b_id"],
            ["generations.id"],
            name="fk_comparisons_generation_b_id_generations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
    )
    op.create_table(
        "raters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("anonymous_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raters"),
        sa.UniqueConstraint("anonymous_id", name="uq_raters_anonymous_id"),
    )
    op.create_table(
        "ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.Uuid(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("choice IN ('a', 'b', 'tie', 'both_bad')", name="ck_ratings_choice"),
        sa.ForeignKeyConstraint(
            ["comparison_id"], ["comparisons.id"], name="fk_ratings_comparison_id_comparisons"
        ),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name="fk_ratings_rater_id_raters"),
        sa.PrimaryKeyConstraint("id", name="pk_ratings"),
        sa.UniqueConstraint("comparison_id", "rater_id", name="uq_ratings_comparison_id_rater_id"),
        sa.UniqueConstraint("uuid", name="uq_ratings_uuid"),
    )
    op.create_table(
        "rating_objectives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rating_id", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(64), nullable=False),
        sa.Column("choice", sa.String(4), nullable=True),
        sa.Column("likert", sa.SmallInteger(), nullable=True),
        sa.CheckConstraint(
            "choice IS NULL OR choice IN ('a', 'b', 'tie')", name="ck_rating_objectives_choice"
        ),
        sa.CheckConstraint(
            "likert IS NULL OR likert BETWEEN 1 AND 5", name="ck_rating_objectives_likert"
        ),
        sa.CheckConstraint(
            "choice IS NOT NULL OR likert IS NOT NULL", name="ck_rating_objectives_not_empty"
        ),
        sa.ForeignKeyConstraint(
            ["rating_id"], ["ratings.id"], name="fk_rating_objectives_rating_id_ratings"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_rating_objectives"),
        sa.UniqueConstraint(
            "rating_id", "objective", name="uq_rating_objectives_rating_id_objective"
        ),
    )


def downgrade() -> None:
    op.drop_table("rating_objectives")
    op.drop_table("ratings")
    op.drop_table("raters")
    op.drop_table("comparisons")
    op.drop_table("scores")
    op.drop_index("ix_generations_method", table_name="generations")
    op.drop_index("ix_generations_prompt_id", table_name="generations")
    op.drop_table("generations")
    op.drop_table("prompts")
