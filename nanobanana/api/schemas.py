"""What the API takes and gives, as pydantic models (they are the OpenAPI schema), and the conversions from
the service's types. One request model per studio: its ranges come from the loaded model and the limits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from nanobanana.api.problems import describe
from nanobanana.errors import InvalidImage
from nanobanana.generation import GenerationRequest, Mode
from nanobanana.service.ledger import LedgerEntry
from nanobanana.service.studio import JobView, StudioInfo

IMAGE_EXAMPLE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


# -- requests -----------------------------------------------------------------------------------------
class ImageRequestBase(BaseModel):
    """Fields every studio's request model has; `request_model` adds the ranges."""

    model_config = ConfigDict(extra="forbid")

    def generation_request(self, images: list[Any]) -> GenerationRequest:
        data = self.model_dump()
        return GenerationRequest(
            prompt=data["prompt"], mode=Mode.EDIT if images else Mode.TEXT_TO_IMAGE,
            negative_prompt=data["negative_prompt"] or "",
            aspect_ratio=data["aspect_ratio"] or ("auto" if images else "1:1"), num_images=data["num_images"],
            steps=data["steps"], guidance=data["guidance"], seed=data["seed"], scheduler=data["scheduler"] or None,
            strength=data["strength"], images=images,
        )

    def fingerprint(self, image_bytes: list[bytes]) -> str:
        """What the idempotency key is bound to: every field, and each image's content."""
        data = self.model_dump(exclude={"images"})
        data["images"] = [hashlib.sha256(b).hexdigest() for b in image_bytes]
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def request_model(info: StudioInfo) -> type[ImageRequestBase]:
    """`POST /v1/images`'s body for this studio's model and limits."""
    limits = info.limits
    ratios = [size.ratio for size in info.sizes]
    return create_model(
        "ImageRequest",
        __base__=ImageRequestBase,
        prompt=(str, Field(min_length=1, max_length=limits.max_prompt_chars,
                           description="What to draw, or for edits what to change.",
                           examples=["a red triangle on a white background"])),
        negative_prompt=(str, Field("", max_length=limits.max_prompt_chars, description="What to avoid.")),
        aspect_ratio=(str | None, Field(None, description="One of the presets; edits default to `auto` (the "
                                        "preset closest to the first image), text-to-image to 1:1.",
                                        json_schema_extra={"enum": [*ratios, "auto", None]}, examples=["1:1"])),
        num_images=(int, Field(1, ge=1, le=limits.max_images)),
        steps=(int | None, Field(None, ge=1, le=info.max_steps, description="Denoising steps; null: the "
                                 f"model's default ({info.defaults.steps}).")),
        guidance=(float | None, Field(None, ge=0, le=30, description="Classifier-free guidance; null: default.")),
        seed=(int | None, Field(None, ge=0, le=2**32 - 1, description="null: a random seed (returned).")),
        scheduler=(str | None, Field(None, json_schema_extra={"enum": [*info.schedulers, None]},
                                     description="null: the model's default.")),
        strength=(float, Field(0.6, ge=0.05, le=1.0, description="Edits: how much may change.")),
        images=(list[str], Field(default_factory=list, max_length=limits.max_input_images,
                                 description="Images to edit, base64 (PNG, JPEG or WebP); never URLs. With "
                                 "multipart/form-data send them as `images` file parts instead.",
                                 examples=[[IMAGE_EXAMPLE]])),
        webhook_url=(str | None, Field(None, max_length=2000, description="POSTed the job (signed, "
                                       "Standard Webhooks) when it ends; needs an API key. null: the key's "
                                       "default URL, if it has one. Hosts on private, loopback or link-local "
                                       "addresses are refused.")),
    )


def decode_base64_images(values: list[str], max_bytes: int) -> list[bytes]:
    decoded = []
    for position, value in enumerate(values, start=1):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        if len(text) > max_bytes * 4 // 3 + 8:
            raise InvalidImage(f"Image {position} is larger than {max_bytes / 1e6:.0f} MB.")
        try:
            decoded.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidImage(f"Image {position} is not valid base64.") from None
    return decoded


# -- responses ----------------------------------------------------------------------------------------
class Problem(BaseModel):
    """An error (RFC 9457 problem details): `detail` is a message to show a person as it is."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    outcome: str | None = Field(None, description="Our code for it (as the usage statistics count it).")
    error: str | None = Field(None, description="Our error class.")

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "about:blank", "title": "Payment Required", "status": 402,
        "detail": "This needs 4 credit(s) and your balance is 1. Ask for fewer or smaller images, fewer steps, "
                  "or ask the operator for more credits.", "outcome": "insufficient_credits",
        "error": "InsufficientCredits"}]})


class ImageOut(BaseModel):
    id: str
    url: str = Field(description="GET it with the same credentials; the stored file's bytes, as kept.")
    width: int
    height: int
    seed: int
    expires_at: str


class Progress(BaseModel):
    step: int
    total_steps: int


class JobResult(BaseModel):
    images: list[ImageOut]
    blocked: int = Field(description="Images withheld by the safety filter (not charged).")
    charged: int = Field(description="Credits charged (0 for anonymous calls).")
    messages: list[str]


JOB_EXAMPLE = {
    "id": "2mQ9cN0xk5Hh3rW1bV7y8g", "state": "succeeded", "created_at": "2026-12-02T08:00:00Z",
    "finished_at": "2026-12-02T08:00:03Z", "place_in_line": None, "eta_seconds": None,
    "progress": {"step": 4, "total_steps": 4}, "message": None,
    "result": {"images": [{"id": "Xb4Vg0m2q8Lk1nJ5cP7rT9sW3yZ6aE0d",
                           "url": "/v1/images/Xb4Vg0m2q8Lk1nJ5cP7rT9sW3yZ6aE0d",
                           "width": 64, "height": 64, "seed": 7, "expires_at": "2026-12-09T08:00:03Z"}],
               "blocked": 0, "charged": 1, "messages": []},
    "error": None,
}


class JobOut(BaseModel):
    """A job: where it stands, and once ended its result (succeeded) or its error (failed, cancelled)."""

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: str
    finished_at: str | None
    place_in_line: int | None = Field(description="1 = next; only while queued.")
    eta_seconds: float | None = Field(description="Until it is done, from the workers' measured speed.")
    progress: Progress
    message: str | None = Field(description="How it stands or ended, in words.")
    result: JobResult | None
    error: Problem | None

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})


def image_out(image: Any) -> ImageOut:
    return ImageOut(id=image.id, url=f"/v1/images/{image.id}", width=image.width, height=image.height,
                    seed=image.seed, expires_at=_iso(image.expires_at) or "")


def job_out(view: JobView) -> JobOut:
    status = view.status
    result = None
    if status.state == "succeeded":
        result = JobResult(images=[image_out(i) for i in view.images], blocked=view.blocked, charged=view.charged,
                           messages=view.messages)
    return JobOut(
        id=status.id, state=status.state, created_at=_iso(view.created_at) or "", finished_at=_iso(view.finished_at),
        place_in_line=status.place, eta_seconds=None if status.eta_seconds is None else round(status.eta_seconds, 1),
        progress=Progress(step=status.total_steps if status.state == "succeeded" else status.step,
                          total_steps=status.total_steps), message=status.describe(),
        result=result, error=Problem(**describe(view.error)) if view.error is not None else None,
    )


class AccountOut(BaseModel):
    kind: Literal["account", "anonymous"]
    username: str | None = None
    balance: int | None = Field(None, description="Credits (accounts).")
    allowance_left: int | None = Field(None, description="Free images left today (anonymous calls).")
    allowance_per_day: int | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"kind": "account", "username": "maria", "balance": 42, "allowance_left": None, "allowance_per_day": None}]})


class LedgerEntryOut(BaseModel):
    created_at: str
    kind: str = Field(description="grant | charge | refund | adjust")
    delta: int
    balance_after: int
    reason: str
    request_id: str | None = Field(description="The job id of a charge or refund.")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"created_at": "2026-12-02T08:00:00Z", "kind": "charge", "delta": -1, "balance_after": 49,
         "reason": "1 image(s) 256×256, 4 steps", "request_id": "2mQ9cN0xk5Hh3rW1bV7y8g"}]})


def ledger_out(entry: LedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(created_at=_iso(entry.created_at) or "", kind=entry.kind, delta=entry.delta,
                          balance_after=entry.balance_after, reason=entry.reason, request_id=entry.request_id)


class Deleted(BaseModel):
    deleted: bool = True
