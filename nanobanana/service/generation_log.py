"""Accounts' generation history: prompt, settings, model, outcome and cost of each request.

Kept for `privacy.history_retention_days`, exported on request, deleted with the account. Anonymous
visitors have no history: their prompts live only beside their images and expire with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from nanobanana.service.db import Database, generations, utcnow


@dataclass(frozen=True)
class HistoryEntry:
    request_id: str
    created_at: datetime
    prompt: str
    settings: dict
    model: str
    outcome: str
    images: int
    charged: int

    def to_dict(self) -> dict:
        return {
            "request_id": self.request_id,
            "created_at": self.created_at.isoformat() + "Z",
            "prompt": self.prompt,
            "settings": self.settings,
            "model": self.model,
            "outcome": self.outcome,
            "images": self.images,
            "charged": self.charged,
        }


class GenerationLog:
    def __init__(self, db: Database, retention_days: float) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)

    def record(self, conn: Connection, account_id: str, *, request_id: str, prompt: str, settings: dict,
               model: str, outcome: str, images: int, charged: int) -> None:
        conn.execute(
            generations.insert().values(
                request_id=request_id, account_id=account_id, created_at=utcnow(), prompt=prompt,
                settings=settings, model=model, outcome=outcome, images=images, charged=charged,
            )
        )

    def for_account(self, account_id: str) -> list[HistoryEntry]:
        with self.db.transaction() as c:
            rows = c.execute(
                sa.select(generations).where(generations.c.account_id == account_id)
                .order_by(generations.c.created_at)
            ).all()
        return [
            HistoryEntry(r.request_id, r.created_at, r.prompt, dict(r.settings or {}), r.model, r.outcome,
                         int(r.images), int(r.charged))
            for r in rows
        ]

    def delete_account(self, account_id: str, conn: Connection) -> None:
        conn.execute(generations.delete().where(generations.c.account_id == account_id))

    def sweep(self, now: datetime | None = None) -> int:
        cutoff = (now or utcnow()) - self.retention
        with self.db.transaction() as c:
            return c.execute(generations.delete().where(generations.c.created_at < cutoff)).rowcount
