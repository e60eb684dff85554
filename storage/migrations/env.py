"""Alembic environment: runs the revisions on the URL that `storage.engine.alembic_config` carries.

Upgrades hold a lock for their whole transaction (SQLite: BEGIN IMMEDIATE from storage.engine;
PostgreSQL: an advisory lock), so app processes starting together migrate one after the other.
Alembic's module-level context makes upgrades in several threads of one process unsafe.

SQLite cannot ALTER most things in place, so revisions run in batch mode there: copy the table,
drop the old one, rename. Dropping a table that other rows reference fails while foreign keys are
enforced, so enforcement is off during the migration (SQLite only lets that change outside a
transaction) and `PRAGMA foreign_key_check` must come back clean before the commit.
"""

from alembic import context

from storage.engine import make_engine
from storage.models import Base

# Any fixed 64-bit number works; it only has to be the same in every process that upgrades.
_ADVISORY_LOCK_KEY = 0x5354_4545_5249_4E47  # "STEERING"


def run_migrations() -> None:
    engine = make_engine(context.config.attributes["url"])
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
            try:
                with connection.begin():
                    if not sqlite:
                        connection.exec_driver_sql(
                            f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})"
                        )
                    context.configure(
                        connection=connection,
                        target_metadata=Base.metadata,
                        render_as_batch=sqlite,
                        compare_type=True,
                    )
                    with context.begin_transaction():
                        context.run_migrations()
                    if sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
            finally:
                if sqlite:
                    connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")
    finally:
        engine.dispose()


run_migrations()
