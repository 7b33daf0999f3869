"""The database: one SQLAlchemy engine, the schema, and Alembic migrations run at start-up.

SQLite (a file in the data folder, WAL mode, a busy timeout, `BEGIN IMMEDIATE` so two writers queue
instead of failing) is the default; `postgresql+psycopg://` URLs work the same. Every table is defined
here so the schema reads in one place; the migrations in `nanobanana/migrations/` create it.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from nanobanana.errors import DatabaseError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK_ID = 0x6E616E6F  # any constant shared by every replica
_MIGRATION_LOCK = threading.Lock()  # Alembic's command API keeps module-level state


def utcnow() -> datetime:
    """Now, in UTC, as a naive datetime (stored the same way on SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


metadata = sa.MetaData()

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_user_id", sa.String(255), nullable=False),
    sa.Column("username", sa.String(255), nullable=False),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updates_opt_in", sa.Boolean, nullable=False, default=False),
    sa.Column("balance", sa.Integer, nullable=False, default=0),
    # Write the prompt and settings into the account's PNG files as text (off unless the person opts in).
    sa.Column("embed_settings", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    sa.UniqueConstraint("username", name="uq_accounts_username"),
    sa.UniqueConstraint("provider", "provider_user_id", name="uq_accounts_provider_user"),
    sa.CheckConstraint("balance >= 0", name="ck_accounts_balance_not_negative"),
)

ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("delta", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # grant | charge | refund | adjust
    sa.Column("reason", sa.String(500), nullable=False, default=""),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("balance_after", sa.Integer, nullable=False),
    # One charge and one refund per request: retries with the same request id cannot charge twice.
    sa.UniqueConstraint("account_id", "request_id", "kind", name="uq_ledger_request_kind"),
    sa.Index("ix_ledger_account", "account_id", "id"),
)

images = sa.Table(
    "images",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner_kind", sa.String(16), nullable=False),  # account | anonymous
    sa.Column("owner_key", sa.String(64), nullable=False),  # account id, or a hash of the session id
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("bytes", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Index("ix_images_owner", "owner_kind", "owner_key", "created_at"),
    sa.Index("ix_images_expires", "expires_at"),
)

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("images", sa.Integer, nullable=False),
    sa.Column("charged", sa.Integer, nullable=False),
    sa.Index("ix_generations_account", "account_id", "created_at"),
)

usage = sa.Table(
    "usage",
    metadata,
    # A random id, not a sequence: row order must not line up with anyone's ledger.
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("hour", sa.DateTime, nullable=False),
    sa.Column("mode", sa.String(32), nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("aspect_ratio", sa.String(16), nullable=False),
    sa.Column("steps", sa.Integer, nullable=True),
    sa.Column("num_images", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("timings", sa.JSON, nullable=False),
    sa.Column("total_seconds", sa.Float, nullable=False),
    sa.Column("generation_seconds", sa.Float, nullable=True),
    sa.Index("ix_usage_hour", "hour"),
)

announcements = sa.Table(
    "announcements",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("emailed", sa.Integer, nullable=False, default=0),
)

# Sign-in sessions, checked on every request so that sign-out and account deletion end them at once.
# `subject` is a keyed hash of provider + provider user id (see `instance_secrets`), never the id itself.
sign_in_sessions = sa.Table(
    "sign_in_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),  # sha256 of the session id in the cookie
    sa.Column("subject", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Index("ix_sign_in_sessions_subject", "subject"),
)

# Deleted accounts, remembered only as that keyed hash for a stated time: signing up again within it
# gives no second sign-up grant.
closed_accounts = sa.Table(
    "closed_accounts",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("forget_at", sa.DateTime, nullable=False),
)

# Random keys made once per installation and shared by every replica (the hash key of `subject`).
instance_secrets = sa.Table(
    "instance_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)


# The anonymous allowance (`service/allowance.py`): images used per UTC day per keyed hash of a browser
# session or a client address (never either in clear), and each request's hold until it ends. Past days
# are deleted by the sweeper.
allowance_usage = sa.Table(
    "allowance_usage",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),  # HMAC of "session"/"address" and the value
    sa.Column("images", sa.Integer, nullable=False),
)

allowance_holds = sa.Table(
    "allowance_holds",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),  # the job id
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("session_key", sa.String(64), nullable=False),
    sa.Column("address_key", sa.String(64), nullable=True),
    sa.Column("images", sa.Integer, nullable=False),  # still held (given back as images fail or are withheld)
    sa.Column("settled", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_allowance_holds_day", "day"),
)

# Generation jobs: a request with its owner, state and held reservation, from submission until it ends.
# The worker that runs a job holds a lease on it; a job whose lease ran out belongs to a dead process.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # also the request id its ledger rows carry
    sa.Column("owner_kind", sa.String(16), nullable=False),  # account | anonymous
    sa.Column("owner_key", sa.String(64), nullable=False),  # account id, or a hash of the session id
    sa.Column("page", sa.String(64), nullable=True),  # a hash of the page (tab) that sent it, for its Cancel
    sa.Column("state", sa.String(16), nullable=False),  # queued | running | succeeded | failed | cancelled
    sa.Column("turn", sa.Integer, nullable=False),  # fair order: served by (turn, created_at)
    sa.Column("model", sa.String(255), nullable=False),  # a worker runs only jobs for the model it has loaded
    sa.Column("batch_key", sa.String(255), nullable=False),  # jobs with equal keys share a pipeline call
    sa.Column("payer", sa.String(16), nullable=False),  # credits | allowance
    sa.Column("num_images", sa.Integer, nullable=False),
    sa.Column("per_image", sa.Integer, nullable=False),  # what the reservation holds per image
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),  # the planned settings (prompt included) and warnings
    sa.Column("inputs", sa.Integer, nullable=False, default=0),  # input images kept under jobs/<id>/
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=True),
    sa.Column("started_at", sa.DateTime, nullable=True),  # the pipeline call began
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("worker", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("step", sa.Integer, nullable=False, default=0),
    sa.Column("total_steps", sa.Integer, nullable=False, default=0),
    sa.Column("pending_files", sa.JSON, nullable=True),  # image ids being written, until recorded
    sa.Column("outcome", sa.String(64), nullable=True),
    sa.Column("error", sa.String(64), nullable=True),  # the error's class name (see nanobanana.errors)
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),  # image ids, blocked, charged, messages, timings
    sa.Column("batch_images", sa.Integer, nullable=True),  # images in the pipeline call it shared
    sa.Column("run_seconds", sa.Float, nullable=True),  # that call's time
    sa.Index("ix_jobs_queue", "state", "turn", "created_at"),
    sa.Index("ix_jobs_owner", "owner_kind", "owner_key", "state"),
)

# API keys: an account's keys for scripts and agents (`service/api_keys.py`). Only a hash of each key is
# stored; the key itself is shown once, when it is made.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),  # the public id (lists, revocation, webhook secrets)
    sa.Column("account_id", sa.String(32), sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),  # the key's first characters, to recognise it
    sa.Column("secret_hash", sa.String(64), nullable=False),  # sha256 of the whole key
    sa.Column("webhook_url", sa.Text, nullable=True),  # where this key's job ends are sent by default
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("last_used_at", sa.DateTime, nullable=True),
    sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    sa.Index("ix_api_keys_account", "account_id"),
)

# Idempotency keys: a retried submission with the same key returns the job the first one made.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("owner_kind", sa.String(16), primary_key=True),
    sa.Column("owner_key", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # sha256 of the request it was first sent with
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("expires_at", sa.DateTime, nullable=False),
    sa.Index("ix_idempotency_keys_expires", "expires_at"),
)

# Webhook deliveries: one per job that asked for a callback; its body is fixed when the job ends, then
# sent until the target answers 2xx or the retries run out.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the webhook-id header: the same on every retry
    sa.Column("job_id", sa.String(32), nullable=False),  # no foreign key: ended jobs are swept
    sa.Column("owner_kind", sa.String(16), nullable=False),
    sa.Column("owner_key", sa.String(64), nullable=False),
    sa.Column("api_key_id", sa.String(16), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # waiting | pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime, nullable=True),
    sa.Column("payload", sa.Text, nullable=True),  # the JSON body, fixed when the job ended
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(255), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    sa.Index("ix_webhook_deliveries_owner", "owner_kind", "owner_key"),
)


def _sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'nanobanana.service.db'}"


def create_engine(database_url: str | None, data_dir: Path) -> Engine:
    """An engine for `database_url` (default: the SQLite file in the data folder)."""
    url = database_url or _sqlite_url(data_dir)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
            pool_timeout=120,
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record) -> None:
            # Let SQLAlchemy, not the driver, decide when a transaction begins (see _on_begin).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros, not left readable in free pages.
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Take the write lock up front: a deferred transaction that reads and then writes can fail
            # with "database is locked" instead of waiting its turn.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_size=8, max_overflow=8, pool_timeout=120, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates every table on a new database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with _MIGRATION_LOCK, _sqlite_file_lock(engine), engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas starting at once take turns; the later ones find the schema up to date.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
    except Exception as exc:
        raise DatabaseError(f"Could not prepare the database at {engine.url!r}: {exc}") from exc


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Processes starting at once on one SQLite file take turns migrating it. SQLite's own write lock is not
    enough: Alembic commits between migrations, so a second process could read an old version and run a
    migration again ("table jobs already exists")."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class Database:
    """The engine plus the one way to run a unit of work: `with db.transaction() as conn: ...`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, database_url: str | None, data_dir: Path) -> Database:
        data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, data_dir)
        upgrade(engine)
        return cls(engine)

    @contextlib.contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A new transaction, or (given `conn`) the caller's, so services can join one unit of work."""
        if conn is not None:
            yield conn
            return
        with self.engine.begin() as new:
            yield new

    def instance_secret(self, name: str) -> bytes:
        """A random key made once per installation under `name` and shared by every replica (call it at
        start-up, not inside a transaction: SQLite would wait on itself)."""
        select = sa.select(instance_secrets.c.value).where(instance_secrets.c.name == name)
        with self.transaction() as c:
            value = c.execute(select).scalar()
        if value is None:
            try:
                with self.transaction() as c:
                    value = secrets.token_hex(32)
                    c.execute(instance_secrets.insert().values(name=name, value=value))
            except IntegrityError:  # another replica made it first
                with self.transaction() as c:
                    value = c.execute(select).scalar_one()
        return bytes.fromhex(value)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def scrub(self) -> None:
        """After deleting personal data: fold SQLite's write-ahead log into the (zeroed) database file, so
        no copy of the deleted rows stays behind in the log."""
        if self.is_sqlite:
            raw = self.engine.raw_connection()  # outside any transaction, or the checkpoint cannot finish
            try:
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                raw.close()

    def dispose(self) -> None:
        self.engine.dispose()
