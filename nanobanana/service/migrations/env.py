"""Alembic environment: runs on the connection `nanobanana.service.db.upgrade` hands over (or sqlalchemy.url)."""

from alembic import context

from nanobanana.service.db import metadata

target_metadata = metadata
connection = context.config.attributes.get("connection")

if connection is None:
    import sqlalchemy as sa

    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
