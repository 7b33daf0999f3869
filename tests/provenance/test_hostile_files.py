"""Files made to attack "Check an image" and `python -m nanobanana verify`, and what a signed file tells a
stranger: a manifest's names are shown literally, a file that never ends is refused unread, PostScript
never reaches Ghostscript, and the certificates in every file name no machine."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from markdown_it import MarkdownIt
from PIL import Image

from nanobanana.config import REPO_ROOT
from nanobanana.errors import UnreadableFile
from nanobanana.provenance import Origin, Provenance, load_provenance_config
from nanobanana.web.presenters import verdict_markdown
from tests.provenance.conftest import picture, png

BAIT = "[Your account is locked: sign in here](https://evil.example/login) <img src=x onerror=alert(1)> `x`\n# Hi"


def test_a_strangers_manifest_cannot_put_links_images_or_html_on_our_page(provenance, tmp_path):
    # Anyone can sign a valid (untrusted) manifest and name any model in it.
    stranger = Provenance(load_provenance_config({}), tmp_path / "stranger", {})
    data, _ = stranger.mark(picture(3), "s" * 32, Origin("text-to-image", BAIT))
    verdict = provenance.verify(data)
    assert verdict.manifest.valid and not verdict.manifest.trusted and verdict.manifest.model == BAIT
    html = MarkdownIt("commonmark").render(verdict_markdown(verdict))
    assert "<a " not in html and "<img" not in html and "<code>x</code>" not in html and "<h1>" not in html
    assert "(https://evil.example/login) &lt;img src=x" in html  # shown, as text


def test_verify_refuses_a_file_that_never_ends_without_reading_it_all(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nanobanana", "verify", "/dev/zero"], cwd=REPO_ROOT,
                          env={"PATH": "/usr/bin:/bin", "NANOBANANA_DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 5, done.stderr
    assert '"status": "unreadable"' in done.stdout and "MB can be checked" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_signed_file_does_not_name_the_machine_that_signed_it(provenance):
    data, _ = provenance.mark(picture(4), "h" * 32, Origin("text-to-image", "tiny"))
    signer = provenance.verify(data).manifest.signer
    names = " ".join(str(v) for v in signer.values())
    assert signer["common_name"].startswith("Nanobanana content signer (")
    assert f"({socket.gethostname()})" not in names


def test_an_image_too_large_for_pillow_to_open_is_called_too_large_not_unreadable(provenance):
    bomb = png(Image.new("1", (20_000, 20_000)))  # 400 megapixels: Pillow refuses it in `open`
    with pytest.raises(UnreadableFile, match="megapixels can be checked"):
        provenance.verify(bomb)


def test_an_eps_file_named_png_is_unreadable_and_never_handed_to_ghostscript(tmp_path):
    # Pillow opens EPS by its content and renders it with `gs`: attacker PostScript, and `{ } loop` never
    # ends. A `gs` first on PATH that leaves a mark stands in for the real one (which CI may not have).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f"#!/bin/sh\ntouch {tmp_path}/gs-ran\nexit 1\n")
    (bin_dir / "gs").chmod(0o755)
    eps = tmp_path / "innocent.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 300 300\n%%EndComments\n{ } loop\n%%EOF\n")
    done = subprocess.run([sys.executable, "-m", "nanobanana", "verify", str(eps)], cwd=REPO_ROOT,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "NANOBANANA_DATA_DIR": str(tmp_path / "data"),
                               "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 5 and "not an image we can read" in done.stdout, done.stdout + done.stderr
    assert not (tmp_path / "gs-ran").exists()
