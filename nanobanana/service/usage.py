"""Anonymous usage data: one row per request, with nothing that points to a person.

A row holds the hour (rounded down), mode, model, aspect ratio, steps, number of images, outcome and
stage timings. It holds no account or session id, no address and no prompt text. The same events feed
Prometheus metrics on a registry private to each `Studio`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from sqlalchemy.engine import Connection

from nanobanana.service.db import Database, usage, utcnow

# The `*_created` series give each label set's first event to the microsecond; the policy keeps hours.
disable_created_metrics()

OUTCOMES = ("ok", "blocked_prompt", "blocked_image", "insufficient_credits", "invalid_request")
SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


@dataclass
class UsageEvent:
    """What one request contributes to the statistics. Built by the studio, recorded once."""

    mode: str
    model: str
    aspect_ratio: str
    steps: int | None
    num_images: int
    outcome: str = "ok"
    timings: dict[str, float] = field(default_factory=dict)
    images_stored: int = 0
    images_blocked: int = 0

    @classmethod
    def for_request(cls, request: Any, model: str) -> UsageEvent:
        """The event of a request as it arrived (a `GenerationRequest` or a `Plan`), before validation."""
        settings = getattr(request, "settings", None)
        if settings is not None:
            event = cls(mode="", model=model, aspect_ratio="", steps=None, num_images=0)
            event.describe(settings)
            return event
        return cls(
            mode=getattr(request.mode, "value", str(request.mode)), model=model,
            aspect_ratio=str(request.aspect_ratio or "auto"),
            steps=request.steps if isinstance(request.steps, int) else None,
            num_images=request.num_images if isinstance(request.num_images, int) else 0,
        )

    def describe(self, settings: Any) -> None:
        """Take the validated settings (mode, ratio, steps, images) once the request is planned."""
        self.mode, self.aspect_ratio = settings.mode.value, settings.aspect_ratio
        self.steps, self.num_images = settings.steps, settings.num_images

    def row(self) -> dict[str, Any]:
        now = utcnow()
        total = float(self.timings.get("total", 0.0))
        return {
            "id": secrets.token_hex(16),
            "hour": now.replace(minute=0, second=0, microsecond=0),
            "mode": self.mode[:32],
            "model": self.model[:255],
            "aspect_ratio": self.aspect_ratio[:16],
            "steps": self.steps,
            "num_images": int(self.num_images),
            "outcome": self.outcome[:64],
            "timings": {k: round(float(v), 6) for k, v in self.timings.items()},
            "total_seconds": total,
            "generation_seconds": self.timings.get("generate"),
        }


@dataclass
class UsageStats:
    """Aggregates for the stats view (pandas DataFrames)."""

    by_day: Any
    by_setting: Any
    by_outcome: Any
    requests: int


class UsageRecorder:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nanobanana_requests", "Generation requests by outcome.", ["outcome", "mode"],
            registry=self.registry,
        )
        self.images = Counter(
            "nanobanana_images", "Images by what became of them.", ["result"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "nanobanana_request_seconds", "Whole request, validation to settlement.",
            buckets=SECONDS_BUCKETS, registry=self.registry,
        )
        self.generation_seconds = Histogram(
            "nanobanana_generation_seconds", "The model's part of a request.",
            buckets=SECONDS_BUCKETS, registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "nanobanana_stage_seconds", "Seconds per stage of the request path.", ["stage"],
            buckets=SECONDS_BUCKETS, registry=self.registry,
        )

    def record(self, event: UsageEvent, conn: Connection | None = None) -> None:
        """Write the row and update the metrics. In the caller's transaction (`conn`), only the row is
        written: call `observe` once that transaction has committed."""
        with self.db.transaction(conn) as c:
            c.execute(usage.insert().values(**event.row()))
        if conn is None:
            self.observe(event)

    def observe(self, event: UsageEvent) -> None:
        outcome = event.outcome.split(":", 1)[0] if event.outcome.startswith("error:") else event.outcome
        self.requests.labels(outcome=outcome, mode=event.mode).inc()
        if event.images_stored:
            self.images.labels(result="stored").inc(event.images_stored)
        if event.images_blocked:
            self.images.labels(result="blocked").inc(event.images_blocked)
        if "total" in event.timings:
            self.request_seconds.observe(event.timings["total"])
        if "generate" in event.timings:
            self.generation_seconds.observe(event.timings["generate"])
        for stage, seconds in event.timings.items():
            if stage != "total":
                self.stage_seconds.labels(stage=stage).observe(seconds)

    # -- reading ------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        with self.db.transaction() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(usage).order_by(usage.c.hour)).all()]

    def stats(self) -> UsageStats:
        """Counts, p50/p95 generation time and error rate, by day and by setting; outcome shares."""
        import pandas as pd

        frame = pd.DataFrame(self.rows())
        if frame.empty:
            empty = pd.DataFrame()
            return UsageStats(empty, empty, empty, 0)
        frame["day"] = pd.to_datetime(frame["hour"]).dt.date
        frame["error"] = frame["outcome"].str.startswith("error:")
        frame["ok"] = frame["outcome"] == "ok"

        def summarise(group: Any) -> Any:
            gen = group["generation_seconds"].dropna()
            return pd.Series({
                "requests": len(group),
                "images": int(group.loc[group["ok"], "num_images"].sum()),
                "ok": int(group["ok"].sum()),
                "error_rate": float(group["error"].mean()),
                "p50_generation_s": float(gen.quantile(0.5)) if len(gen) else None,
                "p95_generation_s": float(gen.quantile(0.95)) if len(gen) else None,
                "p50_total_s": float(group["total_seconds"].quantile(0.5)),
            })

        by_day = frame.groupby("day").apply(summarise, include_groups=False).reset_index()
        setting = ["mode", "model", "aspect_ratio", "steps"]
        by_setting = frame.groupby(setting, dropna=False).apply(summarise, include_groups=False).reset_index()
        by_outcome = (
            frame.groupby(["day", "outcome"]).size().rename("requests").reset_index()
            .sort_values(["day", "requests"], ascending=[True, False])
        )
        return UsageStats(by_day, by_setting, by_outcome, len(frame))

    # -- Prometheus ---------------------------------------------------------------------------------
    def metrics_text(self) -> bytes:
        """This process's counters and histograms, then the totals of every replica (the usage table):
        with several web replicas and Ray Serve workers, the `_recorded` series read the same whichever
        replica is scraped; the others count what this process saw."""
        return generate_latest(self.registry) + generate_latest(self._recorded())

    def _recorded(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        requests = Gauge("nanobanana_requests_recorded", "Generation requests recorded by every replica (the "
                         "usage table), by outcome and mode.", ["outcome", "mode"], registry=registry)
        images = Gauge("nanobanana_images_recorded", "Images asked for in successful requests, every replica.",
                       registry=registry)
        with self.db.transaction() as c:
            rows = c.execute(sa.select(usage.c.outcome, usage.c.mode, sa.func.count(), sa.func.sum(usage.c.num_images))
                             .group_by(usage.c.outcome, usage.c.mode)).all()
        total = 0
        for outcome, mode, count, num_images in rows:
            short = outcome.split(":", 1)[0] if outcome.startswith("error:") else outcome
            requests.labels(outcome=short, mode=mode).inc(count)
            if outcome == "ok":
                total += int(num_images or 0)
        images.set(total)
        return registry
