"""The request path: validate → reserve → prompt safety → generate → image safety → store → usage → settle."""

from __future__ import annotations

import io
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from PIL import Image

from nanobanana.errors import (
    AllowanceExhausted,
    DuplicateRequest,
    GenerationCancelled,
    GenerationFailed,
    ImageBlocked,
    InsufficientCredits,
    InvalidRequest,
    PromptBlocked,
    ServiceError,
)
from nanobanana.generation import Mode
from nanobanana.service.accounts import Identity, OAuthProfileData
from nanobanana.service.db import images, ledger, usage
from tests.fakes import BLOCK_WORD
from tests.helpers import all_rows, files_under, make_studio, request

MARIA = OAuthProfileData("huggingface", "1001", "maria", "maria@example.org")


def usage_outcomes(studio) -> list[str]:
    return [r["outcome"] for r in studio.services.usage.rows()]


def image_files(studio) -> set[str]:
    return {p.stem for p in studio.services.images.images_dir.iterdir()}


def assert_ledger_is_the_truth(studio, account_id: str) -> None:
    assert studio.services.ledger.balance(account_id) == studio.services.ledger.ledger_sum(account_id) >= 0


# -- the whole path, on the real tiny model -------------------------------------------------------------
def test_a_signed_in_request_is_charged_and_its_images_are_stored(real_studio):
    account = real_studio.sign_in(MARIA)
    result = real_studio.generate(request(num_images=2, seed=7), account.identity)
    assert len(result.images) == 2 and result.blocked == 0
    assert result.charged == 2 and result.balance == account.balance - 2
    assert [i.seed for i in result.images] == [7, 8]
    for stored in result.images:
        with Image.open(real_studio.image_path(account.identity, stored.id)) as png:
            assert png.size == (stored.width, stored.height)
    assert [e.kind for e in real_studio.ledger(account.identity)] == ["grant", "charge"]
    assert usage_outcomes(real_studio) == ["ok"]
    stages = {"validate", "reserve", "prompt_safety", "generate", "image_safety", "store"}
    assert stages <= set(result.timings)


@pytest.mark.slow
def test_the_real_safety_checker_is_the_default_and_blocks_before_generating(data_dir, fast_generator):
    from nanobanana.safety import SafetyChecker

    studio = make_studio(data_dir, fast_generator, real_safety=True)  # build_studio's default
    try:
        assert isinstance(studio.services.safety.checker, SafetyChecker)
        account = studio.sign_in(MARIA)
        with pytest.raises(PromptBlocked):
            studio.generate(request("a hentai poster"), account.identity)
        assert fast_generator.calls == 0
        assert studio.account_summary(account.identity).balance == account.balance
        assert usage_outcomes(studio) == ["blocked_prompt"]
    finally:
        studio.close()


# -- accounts --------------------------------------------------------------------------------------------
def test_the_first_sign_in_creates_the_account_with_the_signup_grant_and_later_ones_find_it(studio):
    first = studio.sign_in(MARIA)
    again = studio.sign_in(MARIA)
    assert first.id == again.id and first.balance == studio.services.config.credits.signup_grant
    assert [e.kind for e in studio.ledger(first.identity)] == ["grant"]
    summary = studio.account_summary(first.identity)
    assert (summary.username, summary.opt_in) == ("maria", False)
    assert studio.account_summary(Identity.anonymous("s")) is None


def test_the_same_username_at_another_provider_gets_its_own_account(studio):
    a = studio.sign_in(MARIA)
    b = studio.sign_in(OAuthProfileData("github", "55", "maria"))
    assert a.id != b.id and b.username == "maria-2"


# -- refunds and failures ---------------------------------------------------------------------------------
def test_a_blocked_prompt_is_never_charged_and_nothing_is_generated_or_stored(studio, fast_generator):
    account = studio.sign_in(MARIA)
    with pytest.raises(PromptBlocked):
        studio.generate(request(f"a {BLOCK_WORD} circle"), account.identity)
    assert fast_generator.calls == 0
    assert studio.account_summary(account.identity).balance == account.balance
    assert [e.kind for e in studio.ledger(account.identity)] == ["grant"]  # checked before reserving
    assert usage_outcomes(studio) == ["blocked_prompt"] and image_files(studio) == set()


def test_the_negative_prompt_is_not_filtered(studio):
    account = studio.sign_in(MARIA)
    studio.generate(request("a circle", negative_prompt=f"{BLOCK_WORD} things"), account.identity)


def test_images_withheld_by_the_filter_are_refunded_and_not_stored(studio):
    account = studio.sign_in(MARIA)
    result = studio.generate(request("circles red1", num_images=3), account.identity)
    assert (len(result.images), result.blocked, result.charged) == (2, 1, 2)
    assert result.balance == account.balance - 2
    assert any("withheld" in m for m in result.messages)
    assert image_files(studio) == {i.id for i in result.images}
    assert_ledger_is_the_truth(studio, account.id)


def test_when_every_image_is_withheld_the_request_fails_with_a_full_refund(studio):
    account = studio.sign_in(MARIA)
    with pytest.raises(ImageBlocked, match="Nothing was charged"):
        studio.generate(request("circles allred", num_images=2), account.identity)
    assert studio.account_summary(account.identity).balance == account.balance
    assert usage_outcomes(studio) == ["blocked_image"] and image_files(studio) == set()


def test_a_withheld_result_says_the_result_was_held_back_not_the_prompt(studio):
    account = studio.sign_in(MARIA)
    with pytest.raises(ImageBlocked) as info:
        studio.generate(request("circles allred"), account.identity)
    message = str(info.value)
    assert message.startswith("The generated image was withheld") and "in the result" in message
    assert "Your prompt passed the safety check" in message and "This prompt" not in message


def test_a_withheld_edit_says_the_instruction_and_upload_passed(studio):
    account = studio.sign_in(MARIA)
    upload = Image.new("RGB", (64, 64), (40, 120, 200))
    with pytest.raises(ImageBlocked) as info:
        studio.generate(request("circles allred", mode=Mode.EDIT, images=[upload], num_images=2, steps=2),
                        account.identity)
    message = str(info.value)
    assert message.startswith("All 2 edited images were withheld")
    assert "Your instruction and upload passed the safety checks" in message and "different instruction" in message
    assert studio.account_summary(account.identity).balance == account.balance


def test_a_refused_upload_says_it_was_the_upload(studio, fast_generator):
    account = studio.sign_in(MARIA)
    with pytest.raises(ImageBlocked, match=r"^Your uploaded image was refused") as info:
        studio.generate(request("a blue circle", mode=Mode.EDIT, images=[Image.new("RGB", (64, 64), "red")],
                                steps=2), account.identity)
    assert "Nothing was charged" in str(info.value) and fast_generator.calls == 0


def test_a_partly_withheld_result_says_how_many_of_the_images_made(studio):
    account = studio.sign_in(MARIA)
    result = studio.generate(request("circles red1", num_images=3), account.identity)
    assert "1 of the 3 images made was withheld by the image filter (the result, not your prompt)" in " ".join(
        result.messages)


def test_a_failed_generation_is_refunded_and_leaves_no_file(studio):
    account = studio.sign_in(MARIA)
    with pytest.raises(GenerationFailed):
        studio.generate(request("fail please", num_images=2), account.identity)
    assert studio.account_summary(account.identity).balance == account.balance
    assert usage_outcomes(studio) == ["error:GenerationFailed"] and image_files(studio) == set()


def test_an_invalid_request_reserves_nothing(studio):
    account = studio.sign_in(MARIA)
    with pytest.raises(InvalidRequest):
        studio.generate(request("a circle", num_images=99), account.identity)
    with pytest.raises(InvalidRequest):
        studio.generate(request("   "), account.identity)
    assert [e.kind for e in studio.ledger(account.identity)] == ["grant"]
    assert usage_outcomes(studio) == ["invalid_request", "invalid_request"]


def test_a_failed_database_commit_refunds_and_leaves_no_rows_or_files(studio, monkeypatch):
    account = studio.sign_in(MARIA)

    def broken(*args, **kwargs):  # failure injector: the last write of the store transaction fails
        raise OSError("disk full")

    monkeypatch.setattr(studio.services.generation_log, "record", broken)
    with pytest.raises(ServiceError, match="nothing was charged"):
        studio.generate(request("a circle", num_images=2), account.identity)
    assert image_files(studio) == set() and all_rows(studio.services.db.engine)["images"] == []
    assert studio.account_summary(account.identity).balance == account.balance
    assert usage_outcomes(studio) == ["error:OSError"]


def test_a_retry_with_the_same_request_id_is_charged_once(studio, fast_generator):
    account = studio.sign_in(MARIA)
    studio.generate(request("a circle"), account.identity, request_id="retry-1")
    with pytest.raises(DuplicateRequest):
        studio.generate(request("a circle"), account.identity, request_id="retry-1")
    assert fast_generator.calls == 1
    assert studio.account_summary(account.identity).balance == account.balance - 1
    assert_ledger_is_the_truth(studio, account.id)


def test_without_enough_credits_nothing_runs_and_the_quote_says_why(studio, fast_generator):
    account = studio.sign_in(MARIA)
    studio.services.ledger.adjust(account.id, -(account.balance - 1), "leave one credit")
    quote = studio.quote(account.identity, num_images=2)
    assert (quote.cost, quote.affordable) == (2, False) and "balance is 1" in quote.message
    with pytest.raises(InsufficientCredits, match="balance is 1"):
        studio.generate(request("a circle", num_images=2), account.identity)
    assert fast_generator.calls == 0 and usage_outcomes(studio) == ["insufficient_credits"]


def test_a_deleted_account_cannot_keep_generating(studio):
    account = studio.sign_in(MARIA)
    studio.delete_account(account.identity)
    with pytest.raises(Exception, match="no longer exists"):
        studio.generate(request("a circle"), account.identity)


# -- the anonymous allowance -------------------------------------------------------------------------------
def test_anonymous_visitors_get_the_daily_allowance_per_session_and_per_address(data_dir, fast_generator):
    studio = make_studio(data_dir, fast_generator, allowance={"anonymous_images_per_day": 3})
    try:
        visitor = Identity.anonymous("session-a", "203.0.113.5")
        result = studio.generate(request("a circle", num_images=2), visitor)
        assert result.allowance_left == 1 and result.charged == 0 and result.balance is None
        with pytest.raises(AllowanceExhausted, match="3 images a day"):
            studio.generate(request("a circle", num_images=2), visitor)
        new_session_same_address = Identity.anonymous("session-b", "203.0.113.5")
        assert studio.allowance_left(new_session_same_address) == 1
        other = Identity.anonymous("session-c", "198.51.100.7")
        assert studio.allowance_left(other) == 3
        assert not studio.quote(visitor, num_images=2).affordable
    finally:
        studio.close()


def test_failed_and_withheld_images_do_not_count_against_the_allowance(studio):
    visitor = Identity.anonymous("session-a", "203.0.113.5")
    left = studio.allowance_left(visitor)
    with pytest.raises(GenerationFailed):
        studio.generate(request("fail"), visitor)
    result = studio.generate(request("circles red0", num_images=2), visitor)
    assert result.blocked == 1 and studio.allowance_left(visitor) == left - 1


def test_uploaded_images_are_used_in_memory_and_never_stored(studio):
    visitor = Identity.anonymous("session-a")
    upload = Image.new("RGB", (80, 60), (10, 200, 30))
    raw = io.BytesIO()
    upload.save(raw, format="PNG")
    result = studio.generate(request("make it blue", mode=Mode.IMAGE_TO_IMAGE, images=[upload], steps=2),
                             visitor)
    files = files_under(studio.services.data_dir)
    stored = [p for p in files if p.suffix == ".png"]
    assert {p.stem for p in stored} == {i.id for i in result.images}
    assert all(p.read_bytes() != raw.getvalue() for p in files)


# -- 200 requests at once ----------------------------------------------------------------------------------
def test_200_parallel_requests_never_overdraw_and_the_balance_equals_the_ledger(
    data_dir, fast_generator, database_url
):
    studio = make_studio(data_dir, fast_generator, database_url=database_url, credits={"signup_grant": 120},
                         storage={"account_max_images": 1000}, jobs={"max_open_per_person": 1000})
    try:
        account = studio.sign_in(MARIA)

        def one(i: int) -> tuple[int, str, int]:
            if i % 10 == 3:
                prompt, n = "fail now", 1  # injected model failure
            elif i % 7 == 0:
                prompt, n = "circles red1", 2  # one of two images withheld
            else:
                prompt, n = "a circle", 1
            try:
                result = studio.generate(
                    request(prompt, num_images=n), account.identity, request_id=f"req-{i}"
                )
                return i, "ok", len(result.images)
            except (InsufficientCredits, GenerationFailed) as exc:
                return i, type(exc).__name__, 0

        with ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(one, range(200)))
        kinds = Counter(kind for _, kind, _ in outcomes)
        stored = sum(n for *_, n in outcomes)
        assert kinds["ok"] and kinds["InsufficientCredits"] and kinds["GenerationFailed"]
        assert sum(kinds.values()) == 200

        balance = studio.services.ledger.balance(account.id)
        assert balance == studio.services.ledger.ledger_sum(account.id) >= 0
        assert 120 - balance == stored  # charged exactly the images delivered
        with studio.services.db.engine.connect() as c:
            entries = c.execute(sa.select(ledger).where(ledger.c.kind != "grant")).all()
            assert c.execute(sa.select(sa.func.count()).select_from(images)).scalar() == stored
            assert c.execute(sa.select(sa.func.count()).select_from(usage)).scalar() == 200
        net: Counter[str] = Counter()
        for e in entries:
            net[e.request_id] += e.delta
        for i, kind, n in outcomes:
            assert net[f"req-{i}"] == -n, (i, kind)  # failures fully refunded, withheld images refunded
        assert len(image_files(studio)) == stored
    finally:
        studio.close()


def test_an_anonymous_retry_with_the_same_request_id_counts_once(studio, fast_generator):
    visitor = Identity.anonymous("session-a")
    studio.generate(request("a circle"), visitor, request_id="anon-retry")
    with pytest.raises(DuplicateRequest):
        studio.generate(request("a circle"), visitor, request_id="anon-retry")
    assert fast_generator.calls == 1
    assert studio.allowance_left(visitor) == studio.services.config.allowance.anonymous_images_per_day - 1


def test_a_cancelled_request_is_refunded(studio):
    account = studio.sign_in(MARIA)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        studio.generate(request("a circle"), account.identity, cancel=cancel)
    assert studio.account_summary(account.identity).balance == account.balance
    assert usage_outcomes(studio) == ["cancelled"]
