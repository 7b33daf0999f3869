"""`python -m eval errors`: a mix of valid requests, invalid ones and injected faults through the service,
then proof that no credit, allowance or file was lost.

The studio is the app's own (`build_studio` on a temp data folder, SQLite). Faults are injected from
outside: `FaultyGenerator` is the real `Generator` with a step callback that raises (model exception) or
stalls (timeout: the caller's deadline sets the request's cancel event); `FaultyStore` is the real
`ImageStore` whose disk fills up in the middle of writing a request's images, or whose database insert
fails. A corrupt upload goes through `load_image`, as the UI does, before reaching the studio.

After the run: every account's ledger sums to its balance; every failed request that was charged was
refunded in full and every successful one charged exactly what the studio reported; the anonymous
allowance counts only stored images; no image file lacks a row and no row lacks its file; the usage
table has one row per request that reached the studio, with the same outcome.

Writes `requests.csv`, `by_cause.csv`, `checks.json`, `summary.json` and `errors_by_cause.png` under
`--out` (default `results/errors`).
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from eval.common import (
    add_common_arguments,
    apply_threads,
    command_line,
    environment,
    generation_config,
    safety_filter,
    wilson,
    write_csv,
    write_json,
)
from nanobanana.generation import GenerationRequest, Generator, Mode, load_image
from nanobanana.service.images import ImageStore

SAFETY_PROMPTS = Path(__file__).resolve().parent / "data" / "safety_prompts.csv"
VALID_PROMPTS = [
    "a red circle on a blue background",
    "two yellow stars on a black background",
    "a green triangle on the left",
    "an image of purple square at the top on white",
]
# cause -> (share of a full run, what the studio should answer)
CAUSES: dict[str, tuple[float, str]] = {
    "valid_account": (0.22, "ok"),
    "valid_anonymous": (0.12, "ok"),
    "valid_image_to_image": (0.06, "ok"),
    "empty_prompt": (0.04, "InvalidRequest"),
    "steps_out_of_range": (0.04, "InvalidRequest"),
    "unknown_aspect_ratio": (0.04, "InvalidRequest"),
    "too_many_images": (0.04, "InvalidRequest"),
    "unknown_scheduler": (0.04, "InvalidRequest"),
    "corrupt_upload": (0.04, "InvalidImage"),
    "unsafe_prompt": (0.04, "PromptBlocked"),
    "insufficient_credits": (0.04, "InsufficientCredits"),
    "allowance_spent": (0.04, "AllowanceExhausted"),
    "duplicate_request_id": (0.04, "DuplicateRequest"),
    "model_exception": (0.05, "GenerationFailed"),
    "timeout": (0.05, "GenerationCancelled"),
    "disk_full": (0.05, "ServiceError"),
    "database_error": (0.05, "ServiceError"),
}
TIMEOUT_DEADLINE_S = 0.05
STALL_PER_STEP_S = 0.25


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "errors", help="valid/invalid requests and injected faults: error rates, and no credits lost",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser, "errors")
    parser.add_argument("-n", "--requests", type=int, default=None,
                        help="requests in the mix (default 150; small: each cause once)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps of valid requests (default 2)")
    parser.add_argument("--safety", choices=["on", "off"], default="on",
                        help="on: the configured safety filters, as the app runs (default); off: allow all")
    parser.set_defaults(func=run)


# -- fault injection ----------------------------------------------------------------------------------
class FaultyGenerator(Generator):
    """The real generator; `fault` makes the next call's pipeline raise mid-run or stall past its deadline."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.fault: str | None = None

    def run_batch(self, plans, *, on_step=None, cancel=None, load_seconds=0.0):
        if self.fault == "model_exception":
            def on_step(step: int, total: int) -> None:
                raise RuntimeError("injected fault: the denoiser crashed")
        elif self.fault == "stall":
            def on_step(step: int, total: int) -> None:
                time.sleep(STALL_PER_STEP_S)
        return super().run_batch(plans, on_step=on_step, cancel=cancel, load_seconds=load_seconds)


class _FullDisk:
    """Stands in for the next image to write: saving it fails as a full disk does."""

    width = height = 64
    size = (64, 64)  # too small for the watermark: the marking step passes it on to be saved

    def save(self, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


class FaultyStore(ImageStore):
    """The real image store; `fault` fills the disk mid-request or fails the database insert."""

    fault: str | None = None

    def write_files(self, pictures, ids=None, **kwargs):
        if self.fault == "disk_full":
            # The request's own images are written, then the disk is full: written files must be removed.
            ids = None if ids is None else [*ids, "full-disk-next-image-0000000000000"]
            return super().write_files([*pictures, _FullDisk()], ids=ids, **kwargs)
        return super().write_files(pictures, ids=ids, **kwargs)

    def record(self, conn, identity, files, **kwargs):
        if self.fault == "database_error":
            from sqlalchemy.exc import OperationalError

            raise OperationalError("INSERT INTO images", {}, Exception("disk I/O error (injected)"))
        return super().record(conn, identity, files, **kwargs)


# -- the request mix ----------------------------------------------------------------------------------
def plan_causes(n: int | None, small: bool, rng: random.Random, with_safety: bool) -> list[str]:
    causes = [c for c in CAUSES if with_safety or c != "unsafe_prompt"]
    if small:
        plan = list(causes)
    else:
        n = n or 150
        plan = [c for c in causes for _ in range(max(2, round(CAUSES[c][0] * n)))]
        plan += rng.choices(["valid_account", "valid_anonymous"], k=max(0, n - len(plan)))
    rng.shuffle(plan)
    # A duplicate needs an earlier successful account request to repeat: start with one.
    return ["valid_account", *plan]


def unsafe_prompts() -> list[str]:
    with SAFETY_PROMPTS.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [r["prompt"] for r in rows if r["label"] != "safe" and r["note"] == "plain" and r["split"] == "test"]


def corrupt_png(seed: int) -> bytes:
    from nanobanana.bundled.shapes import PromptSpec, render

    buffer = io.BytesIO()
    render(PromptSpec("red", "circle"), seed=seed).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]  # truncated mid-stream, as an interrupted upload


class Mix:
    """Builds and sends each request of the mix exactly as the UI would, recording what happened."""

    def __init__(self, studio: Any, store: FaultyStore, args: argparse.Namespace, rng: random.Random) -> None:
        from nanobanana.service.studio import Identity, OAuthProfileData

        self.studio, self.store, self.args, self.rng = studio, store, args, rng
        self.Identity = Identity
        rich = studio.sign_in(OAuthProfileData("local", "eval-rich", "eval-rich"))
        studio.services.ledger.grant(rich.id, 100_000, "eval budget")
        poor = studio.sign_in(OAuthProfileData("local", "eval-poor", "eval-poor"))
        studio.services.ledger.adjust(poor.id, -(poor.balance - 1), "eval: one credit left")
        self.rich, self.poor = Identity.account(rich.id), Identity.account(poor.id)
        self.spent = Identity.anonymous("eval-allowance-spent")
        per_day = studio.services.config.allowance.anonymous_images_per_day
        studio.services.allowance.reserve(self.spent, per_day, "eval-spend-all")
        studio.services.allowance.settle("eval-spend-all")
        self.unsafe = unsafe_prompts()
        self.last_ok_account_request: str | None = None
        self.anonymous_used: dict[str, int] = {}

    def request(self, cause: str, i: int) -> tuple[GenerationRequest | None, Any, str | None, bytes | None]:
        """(request, identity, request id to reuse, upload bytes) for one cause."""
        a, rng = self.args, self.rng
        prompt = rng.choice(VALID_PROMPTS)
        seed = a.seed * 100_000 + i
        base = {"prompt": prompt, "seed": seed, "steps": a.steps}
        identity = self.rich
        reuse = upload = None
        if cause == "valid_anonymous":
            identity = self.Identity.anonymous(f"eval-visitor-{i}")
        elif cause == "valid_image_to_image":
            upload = self._png(seed)
            base.update(mode=Mode.IMAGE_TO_IMAGE, strength=0.75)
        elif cause == "empty_prompt":
            base["prompt"] = "   "
        elif cause == "steps_out_of_range":
            base["steps"] = 999
        elif cause == "unknown_aspect_ratio":
            base["aspect_ratio"] = "7:3"
        elif cause == "too_many_images":
            base["num_images"] = 9
        elif cause == "unknown_scheduler":
            base["scheduler"] = "NoSuchScheduler"
        elif cause == "corrupt_upload":
            upload = corrupt_png(seed)
            base.update(mode=Mode.IMAGE_TO_IMAGE)
        elif cause == "unsafe_prompt":
            base["prompt"] = rng.choice(self.unsafe)
        elif cause == "insufficient_credits":
            identity, base["num_images"] = self.poor, 4
        elif cause == "allowance_spent":
            identity = self.spent
        elif cause == "duplicate_request_id":
            reuse = self.last_ok_account_request
        elif cause == "timeout":
            base["steps"] = max(a.steps, 3)
        if cause in ("model_exception", "timeout", "disk_full", "database_error") and rng.random() < 0.4:
            identity = self.Identity.anonymous(f"eval-visitor-{i}")  # faults must release allowance too
        return GenerationRequest(**base), identity, reuse, upload

    @staticmethod
    def _png(seed: int) -> bytes:
        from nanobanana.bundled.shapes import PromptSpec, render

        buffer = io.BytesIO()
        render(PromptSpec("blue", "square", "yellow"), seed=seed).save(buffer, format="PNG")
        return buffer.getvalue()

    def send(self, cause: str, i: int) -> dict[str, Any]:
        from nanobanana.errors import NanobananaError

        studio, generator = self.studio, self.studio.services.generator
        request, identity, reuse, upload = self.request(cause, i)
        request_id = reuse or f"eval-{i}"
        row: dict[str, Any] = {
            "i": i, "cause": cause, "expected": CAUSES[cause][1], "identity": identity.kind,
            "request_id": request_id, "reached_service": True,
        }
        cancel = None
        generator.fault = {"model_exception": "model_exception", "timeout": "stall"}.get(cause)
        self.store.fault = cause if cause in ("disk_full", "database_error") else None
        timer = None
        if cause == "timeout":
            cancel = threading.Event()
            timer = threading.Timer(TIMEOUT_DEADLINE_S, cancel.set)  # the caller's deadline
            timer.start()
        started = time.perf_counter()
        try:
            if upload is not None:
                try:
                    request.images = [load_image(upload, generator.config.limits)]
                except NanobananaError:
                    row["reached_service"] = False  # refused at upload, as in the UI
                    raise
            result = studio.generate(request, identity, request_id=request_id, cancel=cancel)
        except NanobananaError as exc:
            row.update(outcome=type(exc).__name__, message=str(exc)[:200], charged=0, images=0)
        else:
            row.update(outcome="ok", message=" ".join(result.messages)[:200], charged=result.charged,
                       images=len(result.images), blocked_images=result.blocked)
            if identity.is_account:
                self.last_ok_account_request = request_id
        finally:
            generator.fault = None
            self.store.fault = None
            if timer is not None:
                timer.cancel()
        row["seconds"] = round(time.perf_counter() - started, 4)
        if not identity.is_account and cause != "allowance_spent":
            self.anonymous_used[identity.key] = self.anonymous_used.get(identity.key, 0) + row["images"]
        row["as_expected"] = row["outcome"] == row["expected"] or (
            # The image filter may withhold a generated image; that is the filter working, not a fault.
            row["expected"] == "ok" and row["outcome"] == "ImageBlocked"
        )
        return row


# -- the checks ---------------------------------------------------------------------------------------
def ledger_by_request(studio: Any, identity: Any) -> dict[str, dict[str, int]]:
    moves: dict[str, dict[str, int]] = {}
    for entry in studio.services.ledger.history(identity.key):
        if entry.request_id:
            kinds = moves.setdefault(entry.request_id, {})
            kinds[entry.kind] = kinds.get(entry.kind, 0) + entry.delta
    return moves


def checks(studio: Any, mix: Mix, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import sqlalchemy as sa

    from nanobanana.service.db import images as images_table

    result: dict[str, Any] = {}
    for name, identity in (("rich", mix.rich), ("poor", mix.poor)):
        balance = studio.services.ledger.balance(identity.key)
        result[f"ledger_sum_equals_balance_{name}"] = {
            "ok": studio.services.ledger.ledger_sum(identity.key) == balance,
            "balance": balance, "ledger_sum": studio.services.ledger.ledger_sum(identity.key),
        }

    moves = ledger_by_request(studio, mix.rich) | ledger_by_request(studio, mix.poor)
    account_rows = [r for r in rows if r["identity"] == "account" and r["outcome"] != "DuplicateRequest"]
    failed = [r for r in account_rows if r["outcome"] != "ok"]
    charged_failures = [r for r in failed if moves.get(r["request_id"], {}).get("charge")]
    unrefunded = [
        r["request_id"] for r in charged_failures
        if moves[r["request_id"]].get("charge", 0) + moves[r["request_id"]].get("refund", 0) != 0
    ]
    result["failed_requests_refunded_in_full"] = {
        "ok": not unrefunded, "failed_account_requests": len(failed),
        "charged_then_failed": len(charged_failures),
        "refunds": sum(1 for r in charged_failures if moves[r["request_id"]].get("refund")),
        "credits_charged": -sum(moves[r["request_id"]]["charge"] for r in charged_failures),
        "credits_refunded": sum(moves[r["request_id"]].get("refund", 0) for r in charged_failures),
        "not_refunded": unrefunded,
    }
    wrong_charge = [
        r["request_id"] for r in account_rows if r["outcome"] == "ok"
        and -sum(moves.get(r["request_id"], {}).values()) != r["charged"]
    ]
    result["successes_charged_what_was_reported"] = {"ok": not wrong_charge, "mismatched": wrong_charge}
    duplicates = [r for r in rows if r["outcome"] == "DuplicateRequest"]
    history = [e for who in (mix.rich, mix.poor) for e in studio.services.ledger.history(who.key)]
    charges = Counter(e.request_id for e in history if e.kind == "charge")
    double = [r["request_id"] for r in duplicates if charges[r["request_id"]] != 1]
    result["retries_charged_once"] = {"ok": not double, "duplicates": len(duplicates), "charged_twice": double}

    spent_wrong = {
        session: (used, studio.services.allowance.left(mix.Identity.anonymous(session)))
        for session, used in mix.anonymous_used.items()
        if studio.services.allowance.left(mix.Identity.anonymous(session))
        != studio.services.config.allowance.anonymous_images_per_day - used
    }
    failed_visitors = [r for r in rows if r["identity"] == "anonymous" and r["outcome"] != "ok"
                       and r["cause"] != "allowance_spent"]
    result["allowance_counts_only_stored_images"] = {
        "ok": not spent_wrong, "visitors": len(mix.anonymous_used), "mismatched": spent_wrong,
        "failed_visitor_requests": len(failed_visitors),
    }

    with studio.services.db.transaction() as conn:
        ids = set(conn.execute(sa.select(images_table.c.id)).scalars())
    files = {p.stem for p in studio.services.images.images_dir.iterdir() if p.suffix == ".png"}
    temp = [p.name for p in studio.services.images.images_dir.iterdir() if p.suffix != ".png"]
    stored = sum(r.get("images", 0) for r in rows if r["outcome"] == "ok")
    result["no_orphan_files_or_rows"] = {
        "ok": files == ids and not temp and len(ids) == stored,
        "files": len(files), "rows": len(ids), "images_reported_stored": stored,
        "files_without_row": sorted(files - ids), "rows_without_file": sorted(ids - files), "temp_files": temp,
    }

    usage = Counter(r["outcome"] for r in studio.services.usage.rows())
    reached = Counter(
        "ok" if r["outcome"] == "ok" else r["outcome"] for r in rows if r["reached_service"]
    )
    result["usage_row_per_request"] = {
        "ok": sum(usage.values()) == sum(reached.values()),
        "usage_rows": sum(usage.values()), "requests_reaching_service": sum(reached.values()),
        "usage_outcomes": dict(usage),
    }
    result["all_passed"] = all(v["ok"] for v in result.values() if isinstance(v, dict))
    return result


def by_cause(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for cause in dict.fromkeys(r["cause"] for r in sorted(rows, key=lambda r: list(CAUSES).index(r["cause"]))):
        group = [r for r in rows if r["cause"] == cause]
        errors = sum(r["outcome"] not in ("ok",) for r in group)
        low, high = wilson(errors, len(group))
        table.append({
            "cause": cause, "expected": CAUSES[cause][1], "n": len(group), "errors": errors,
            "error_rate": errors / len(group), "ci_low": low, "ci_high": high,
            "as_expected": sum(r["as_expected"] for r in group),
            "outcomes": "; ".join(f"{k} {v}" for k, v in Counter(r["outcome"] for r in group).most_common()),
        })
    return table


def plot(out: Path, rows: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    causes = list(dict.fromkeys(c for c in CAUSES if any(r["cause"] == c for r in rows)))
    outcomes = list(dict.fromkeys(r["outcome"] for r in sorted(rows, key=lambda r: r["outcome"] != "ok")))
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(causes) + 1.4))
    left = [0] * len(causes)
    palette = [c for i, c in enumerate(plt.cm.tab20.colors) if i not in (4, 5)]  # green is kept for "ok"
    for j, outcome in enumerate(outcomes):
        counts = [sum(r["cause"] == c and r["outcome"] == outcome for r in rows) for c in causes]
        colour = "tab:green" if outcome == "ok" else palette[j % len(palette)]
        ax.barh(causes, counts, left=left, label=outcome, color=colour)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("requests")
    ax.set_title("What the service answered, by cause of the request")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="answer", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "errors_by_cause.png", dpi=110)
    plt.close(fig)
    return "errors_by_cause.png"


def run(args: argparse.Namespace) -> int:
    from nanobanana.service.build import build_studio

    apply_threads(args.threads)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    config = generation_config(args.model)
    causes = plan_causes(args.requests, args.small, rng, args.safety == "on")
    with tempfile.TemporaryDirectory(prefix="nanobanana-errors-") as data_dir:
        studio = build_studio(generator=FaultyGenerator(config), safety=safety_filter(args.safety),
                              data_dir=Path(data_dir), start_sweeper=False, images=FaultyStore)
        try:
            store = studio.services.images
            mix = Mix(studio, store, args, rng)
            print(f"{len(causes)} requests on {config.model.name}, safety {args.safety}", flush=True)
            rows = [mix.send(cause, i) for i, cause in enumerate(causes)]
            verdict = checks(studio, mix, rows)
        finally:
            studio.close()

    table = by_cause(rows)
    write_csv(args.out / "requests.csv", rows)
    write_csv(args.out / "by_cause.csv", table)
    write_json(args.out / "checks.json", verdict)
    valid = [r for r in rows if CAUSES[r["cause"]][1] == "ok"]
    summary = {
        "command": command_line("errors", args, "requests", "steps") + f" --safety {args.safety}",
        "environment": environment(),
        "model": config.model.name,
        "requests": len(rows),
        "error_rate_valid_requests": sum(r["outcome"] != "ok" for r in valid) / max(1, len(valid)),
        "as_expected": sum(r["as_expected"] for r in rows),
        "checks_passed": verdict["all_passed"],
        "plots": [plot(args.out, rows)],
    }
    write_json(args.out / "summary.json", summary)

    print(f"  {'cause':24} {'n':>4} {'errors':>7}  outcomes")
    for t in table:
        print(f"  {t['cause']:24} {t['n']:4d} {t['errors']:7d}  {t['outcomes']}")
    print(f"  answered as expected: {summary['as_expected']}/{len(rows)}")
    for name, check in verdict.items():
        if isinstance(check, dict):
            print(f"  {'PASS' if check['ok'] else 'FAIL'} {name}")
    print(f"wrote {args.out}/summary.json")
    return 0 if verdict["all_passed"] else 1
