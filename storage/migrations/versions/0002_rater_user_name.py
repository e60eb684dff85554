"""Signed-in user name on raters; index ratings by rater for per-rater counts.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("raters") as batch:
        batch.add_column(sa.Column("user_name", sa.String(128), nullable=True))
    op.create_index("ix_ratings_rater_id", "ratings", ["rater_id"])


def downgrade() -> None:
    op.drop_index("ix_ratings_rater_id", table_name="ratings")
    with op.batch_alter_table("raters") as batch:
        batch.drop_column("user_name")
