"""Service updates: the operator posts an announcement; account holders who opted in see it in the app
and, when SMTP is configured, get it by e-mail. Opting out stops both. Who was mailed is not stored.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

import sqlalchemy as sa

from nanobanana.errors import AnnouncementError
from nanobanana.service.accounts import Account, Accounts
from nanobanana.service.config import SmtpConfig
from nanobanana.service.db import Database, announcements, utcnow

log = logging.getLogger(__name__)
SHOWN_IN_APP = 20


@dataclass(frozen=True)
class Announcement:
    id: int
    created_at: datetime
    text: str


@dataclass(frozen=True)
class AnnounceReport:
    announcement: Announcement
    emailed: int
    email_failures: int
    email_enabled: bool


class Announcements:
    def __init__(self, db: Database, accounts: Accounts, smtp: SmtpConfig, operator_name: str) -> None:
        self.db = db
        self.accounts = accounts
        self.smtp = smtp
        self.operator_name = operator_name

    def post(self, text: str) -> AnnounceReport:
        text = (text or "").strip()
        if not text:
            raise AnnouncementError("An announcement needs some text.")
        with self.db.transaction() as c:
            new_id = c.execute(
                announcements.insert().values(created_at=utcnow(), text=text, emailed=0)
                .returning(announcements.c.id)
            ).scalar_one()
            row = c.execute(sa.select(announcements).where(announcements.c.id == new_id)).one()
        item = Announcement(row.id, row.created_at, row.text)
        emailed = failures = 0
        if self.smtp.enabled:
            emailed, failures = self._mail(item, [a for a in self.accounts.opted_in() if a.email])
            with self.db.transaction() as c:
                c.execute(announcements.update().where(announcements.c.id == item.id).values(emailed=emailed))
        return AnnounceReport(item, emailed, failures, self.smtp.enabled)

    def for_account(self, account: Account) -> list[Announcement]:
        """Newest first; nothing for accounts that did not opt in."""
        if not account.updates_opt_in:
            return []
        with self.db.transaction() as c:
            rows = c.execute(
                sa.select(announcements).order_by(announcements.c.id.desc()).limit(SHOWN_IN_APP)
            ).all()
        return [Announcement(r.id, r.created_at, r.text) for r in rows]

    def _mail(self, item: Announcement, recipients: list[Account]) -> tuple[int, int]:
        cfg = self.smtp
        sent = failed = 0
        with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds) as smtp:
            if cfg.starttls:
                smtp.starttls()
            if cfg.username:
                smtp.login(cfg.username, cfg.password or "")
            for account in recipients:
                # One message per person: recipients never see each other's addresses.
                message = EmailMessage()
                message["From"] = cfg.from_address
                message["To"] = account.email
                message["Subject"] = f"Service update from {self.operator_name}"
                message.set_content(
                    f"{item.text}\n\n—\nYou receive this because you opted in to service updates as "
                    f"{account.username}. Opt out in the app's account panel to stop these e-mails."
                )
                try:
                    smtp.send_message(message)
                    sent += 1
                except smtplib.SMTPException as exc:
                    failed += 1
                    log.warning("announcement e-mail failed: %s", type(exc).__name__)
        return sent, failed
