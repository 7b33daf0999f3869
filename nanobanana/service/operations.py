"""What an operator does to the service: accounts, credits, exports, deletions, sweeps, announcements.

    with open_operations() as ops:       # same data folder and database as the app, no sweeper thread
        ops.grant("maria", 100, "beta tester")

USER arguments are a username or an account id. The operator CLI (`nanobanana.cli.operator`) is a thin
layer over this class; person-facing actions (export, deletion) go through the same `Studio` calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanobanana.errors import ConfigError, OperatorError
from nanobanana.service.accounts import Account, OAuthProfileData
from nanobanana.service.announcements import AnnounceReport
from nanobanana.service.api_keys import ApiKey, NewApiKey
from nanobanana.service.build import Services, build_services
from nanobanana.service.images import SweepReport
from nanobanana.service.ledger import LedgerEntry
from nanobanana.service.studio import Studio


class Operations:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.studio = Studio(services)

    def account(self, user: str) -> Account:
        return self.services.accounts.resolve(user)

    def add_user(self, username: str, provider: str = "local", provider_user_id: str | None = None,
                 email: str | None = None, opt_in: bool = False) -> Account:
        """An account as if its owner had signed in (with the sign-up grant)."""
        provider_id = provider_user_id or username
        if self.services.accounts.find_by_provider(provider, provider_id) is not None:
            raise OperatorError(f"An account for {provider} user {provider_id!r} already exists.")
        account = self.studio.sign_in(OAuthProfileData(provider, provider_id, username, email))
        if opt_in:
            self.studio.set_updates_opt_in(account.identity, True)
        return self.services.accounts.get(account.id)

    def users(self) -> list[Account]:
        return self.services.accounts.list()

    def image_count(self, user: str) -> int:
        return len(self.studio.list_images(self.account(user).identity))

    def grant(self, user: str, amount: int, reason: str) -> int:
        """Add credits (a negative amount adjusts down); returns the new balance."""
        account = self.account(user)
        if amount > 0:
            return self.services.ledger.grant(account.id, amount, reason)
        return self.services.ledger.adjust(account.id, amount, reason)

    def ledger(self, user: str) -> list[LedgerEntry]:
        return self.services.ledger.history(self.account(user).id)

    def export(self, user: str, target: Path) -> Path:
        """Write the account's privacy export zip to `target` (the stored copy is then deleted)."""
        identity = self.account(user).identity
        made = self.studio.export(identity)
        found = self.studio.export_download(identity, made.name)
        if found is None:
            raise OperatorError("The export could not be read back from storage; try again.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            for chunk in found[1]:
                handle.write(chunk)
        self.studio.forget_export(identity, made.name)
        return target

    def delete_account(self, user: str) -> Account:
        account = self.account(user)
        self.studio.delete_account(account.identity)
        return account

    def create_api_key(self, user: str, name: str, webhook_url: str | None = None) -> NewApiKey:
        """A key for the account (shown once: the answer holds the key and its webhook secret)."""
        return self.studio.create_api_key(self.account(user).identity, name, webhook_url)

    def api_keys(self, user: str) -> list[ApiKey]:
        return self.studio.api_keys(self.account(user).identity)

    def revoke_api_key(self, user: str, key_id: str) -> ApiKey:
        return self.studio.revoke_api_key(self.account(user).identity, key_id)

    def sweep(self) -> SweepReport:
        return self.studio.sweep()

    def announce(self, text: str) -> AnnounceReport:
        """Post a service update (shown in the app; e-mailed when SMTP is configured)."""
        return self.services.announcements.post(text)


def _no_safety_needed():
    raise ConfigError("Operator commands do not generate images; no safety filter was loaded.")


@contextmanager
def open_operations() -> Iterator[Operations]:
    ops = Operations(build_services(safety=_no_safety_needed))
    try:
        yield ops
    finally:
        ops.services.db.dispose()
