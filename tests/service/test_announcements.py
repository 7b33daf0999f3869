"""Service updates reach opted-in account holders only: in the app, and by e-mail when SMTP is configured."""

from __future__ import annotations

import socket
from email import message_from_bytes

import pytest

from nanobanana.errors import AnnouncementError
from nanobanana.service.accounts import Identity, OAuthProfileData
from tests.helpers import make_studio


class Inbox:
    """An aiosmtpd handler that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def mailing_studio(data_dir, fast_generator, smtp_server):
    _, port = smtp_server
    s = make_studio(data_dir, fast_generator, smtp={"host": "127.0.0.1", "port": port, "starttls": False,
                                                    "from_address": "updates@nanobanana.example"})
    yield s
    s.close()


def people(studio):
    opted = studio.sign_in(OAuthProfileData("local", "1", "ada", "ada@example.org"))
    silent = studio.sign_in(OAuthProfileData("local", "2", "bob", "bob@example.org"))
    no_mail = studio.sign_in(OAuthProfileData("local", "3", "cyd"))
    studio.set_updates_opt_in(opted.identity, True)
    studio.set_updates_opt_in(no_mail.identity, True)
    return opted, silent, no_mail


def test_an_announcement_is_emailed_to_opted_in_accounts_only(mailing_studio, smtp_server):
    inbox, _ = smtp_server
    people(mailing_studio)
    report = mailing_studio.services.announcements.post("Maintenance tonight at 22:00 UTC.")
    assert (report.emailed, report.email_failures, report.email_enabled) == (1, 0, True)
    [(recipients, raw)] = inbox.messages
    assert recipients == ["ada@example.org"]
    mail = message_from_bytes(raw)
    assert "Maintenance tonight" in mail.get_payload() and mail["From"] == "updates@nanobanana.example"


def test_opted_in_accounts_see_announcements_in_the_app_and_others_do_not(mailing_studio):
    opted, silent, no_mail = people(mailing_studio)
    mailing_studio.services.announcements.post("New model available.")
    assert [a.text for a in mailing_studio.announcements(opted.identity)] == ["New model available."]
    assert [a.text for a in mailing_studio.announcements(no_mail.identity)] == ["New model available."]
    assert mailing_studio.announcements(silent.identity) == []
    assert mailing_studio.announcements(Identity.anonymous("s")) == []


def test_opting_out_stops_both_the_app_notice_and_the_email(mailing_studio, smtp_server):
    inbox, _ = smtp_server
    opted, *_ = people(mailing_studio)
    mailing_studio.set_updates_opt_in(opted.identity, False)
    report = mailing_studio.services.announcements.post("Second update.")
    assert report.emailed == 0 and inbox.messages == []
    assert mailing_studio.announcements(opted.identity) == []


def test_without_smtp_announcements_are_shown_in_the_app_only(studio):
    opted, *_ = people(studio)
    report = studio.services.announcements.post("Hello.")
    assert (report.emailed, report.email_enabled) == (0, False)
    assert [a.text for a in studio.announcements(opted.identity)] == ["Hello."]


def test_an_empty_announcement_is_refused(studio):
    with pytest.raises(AnnouncementError):
        studio.services.announcements.post("   ")
