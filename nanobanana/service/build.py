"""The service's parts, made once from the configuration and handed around in one container.

    studio = build_studio()                      # what the app, the CLI, notebooks and eval use
    operations = Operations(studio.services)     # what the operator CLI uses

Tests and eval pass their own generator, safety filter, data folder or database here; nothing is swapped
after construction.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanobanana.generation import Generator
from nanobanana.provenance import Provenance
from nanobanana.safety.gate import SafetyFilter, SafetyGate
from nanobanana.service.accounts import Accounts
from nanobanana.service.allowance import Allowance
from nanobanana.service.announcements import Announcements
from nanobanana.service.api_keys import ApiKeys
from nanobanana.service.blobs import open_blobs
from nanobanana.service.config import ServiceConfig, load_service_config
from nanobanana.service.db import Database
from nanobanana.service.generation_log import GenerationLog
from nanobanana.service.idempotency import IdempotencyKeys
from nanobanana.service.images import ImageStore
from nanobanana.service.jobs import JobStore
from nanobanana.service.ledger import CostRule, Ledger
from nanobanana.service.privacy import Privacy
from nanobanana.service.sessions import SignInSessions
from nanobanana.service.usage import UsageRecorder
from nanobanana.service.webhooks import Webhooks

if TYPE_CHECKING:
    from nanobanana.service.studio import Studio

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Every part of the service, each the single instance of its concern."""

    config: ServiceConfig
    environ: Mapping[str, str]
    db: Database
    generator: Generator
    safety: SafetyGate
    cost_rule: CostRule
    accounts: Accounts
    ledger: Ledger
    allowance: Allowance
    images: ImageStore
    generation_log: GenerationLog
    usage: UsageRecorder
    privacy: Privacy
    announcements: Announcements
    sessions: SignInSessions
    jobs: JobStore
    api_keys: ApiKeys
    idempotency: IdempotencyKeys
    webhooks: Webhooks
    provenance: Provenance

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir  # type: ignore[return-value]


def build_services(
    environ: Mapping[str, str] | None = None,
    *,
    generator: Generator | None = None,
    safety: SafetyFilter | Callable[[], SafetyFilter] | None = None,
    data_dir: Path | None = None,
    database_url: str | None = None,
    config: ServiceConfig | None = None,
    images: Callable[[Database, Path, Any], ImageStore] = ImageStore,
    provenance: Provenance | None = None,
) -> Services:
    """Open and migrate the database and make every part. `safety` defaults to
    `nanobanana.safety.SafetyChecker`; `images` makes the image store (eval injects faults there);
    `provenance` defaults to `configs/provenance.yaml`'s marks (a first start makes the local signing key)."""
    environ = os.environ if environ is None else environ
    config = config or load_service_config(environ)
    updates: dict[str, Any] = {}
    if data_dir is not None:
        updates["data_dir"] = Path(data_dir).resolve()
    if database_url is not None:
        updates["database_url"] = database_url
    config = config.model_copy(update=updates)
    db = Database.open(config.database_url, config.data_dir)  # type: ignore[arg-type]
    accounts, ledger = Accounts(db), Ledger(db)
    blobs = open_blobs(config.storage, config.data_dir)  # type: ignore[arg-type]
    store = images(db, config.data_dir, config.storage, blobs=blobs)  # type: ignore[arg-type]
    log = GenerationLog(db, config.privacy.history_retention_days)
    jobs = JobStore(db, config.jobs, config.data_dir, blobs=blobs.under("jobs"))  # type: ignore[arg-type]
    keys = ApiKeys(db, config.api.max_keys_per_account)
    idempotency = IdempotencyKeys(db, config.api.idempotency_hours)
    webhooks = Webhooks(db, jobs, keys, config.api.webhooks)
    generator = generator or Generator()
    operator = "Nanobanana" if config.privacy.operator_unset else config.privacy.operator_name
    provenance = provenance or Provenance.from_config(config.data_dir, environ, operator=operator)  # type: ignore[arg-type]
    return Services(
        config=config, environ=environ, db=db, generator=generator, safety=SafetyGate(safety),
        cost_rule=CostRule.for_model(config.credits, generator.config.model), accounts=accounts, ledger=ledger,
        allowance=Allowance(db, config.allowance.anonymous_images_per_day), images=store, generation_log=log,
        usage=UsageRecorder(db),
        privacy=Privacy(db, accounts, ledger, store, log, jobs, api_keys=keys, idempotency=idempotency,
                        webhooks=webhooks),
        announcements=Announcements(db, accounts, config.smtp, config.privacy.operator_name),
        sessions=SignInSessions(db, config.privacy.sign_in_hours, config.privacy.closed_account_days),
        jobs=jobs, api_keys=keys, idempotency=idempotency, webhooks=webhooks, provenance=provenance,
    )


def build_studio(environ: Mapping[str, str] | None = None, *, start_sweeper: bool = True,
                 start_worker: bool | None = None, **parts: Any) -> Studio:
    """The studio on freshly built `Services` (see `build_services` for `parts`): sweeps once, then
    every `storage.sweep_interval_seconds` in the background unless `start_sweeper=False`; starts the job
    worker thread when `jobs.worker` is `local`, the Ray dispatcher when it is `ray` (or as `start_worker`
    says)."""
    from nanobanana.service.studio import Studio

    studio = Studio(build_services(environ, **parts))
    if studio.services.config.privacy.operator_unset:
        log.warning("privacy.operator_name / privacy.contact are not set: the privacy policy names no "
                    "operator and says so in a banner. Set them in configs/service.yaml or with "
                    "NANOBANANA_SERVICE__PRIVACY__OPERATOR_NAME and NANOBANANA_SERVICE__PRIVACY__CONTACT.")
    studio.sweep()
    if start_sweeper:
        studio.start_sweeper()
    if start_worker if start_worker is not None else studio.services.config.jobs.worker in ("local", "ray"):
        studio.start_worker()
    return studio
