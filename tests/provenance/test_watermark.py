"""Our vectorised DWT-DCT-SVD is invisible-watermark's algorithm: the same blocks, the same bits."""

from __future__ import annotations

import numpy as np
import pywt
from imwatermark.dwtDctSvd import EmbedDwtDctSvd

from nanobanana.provenance.watermark import _lowpass, _rgb_and_u, embed_bits, read_bits
from tests.provenance.conftest import picture

BITS = [int(b) for b in np.random.default_rng(0).integers(0, 2, 64)]


def test_embedding_changes_the_low_band_exactly_as_the_library_does():
    approx, _, _ = _lowpass(_rgb_and_u(picture(1, size=320))[1])
    ours, theirs = approx.copy(), approx.copy()
    embed_bits(ours, BITS, 48)
    EmbedDwtDctSvd(BITS, wmLen=64, scales=[0, 48, 0]).encode_frame(theirs, 48)
    assert np.allclose(ours, theirs, atol=1e-6)


def test_reading_gives_the_library_s_votes():
    approx, _, _ = _lowpass(_rgb_and_u(picture(2, size=288))[1])
    embed_bits(approx, BITS, 48)
    scores = EmbedDwtDctSvd([], wmLen=64, scales=[0, 48, 0]).decode_frame(approx, 48, [[] for _ in range(64)])
    assert np.allclose(read_bits(approx, 64, 48), [np.mean(s) for s in scores])
    assert [int(v > 0.5) for v in read_bits(approx, 64, 48)] == BITS


def test_a_marked_channel_survives_the_inverse_transform():
    channel = _rgb_and_u(picture(3))[1]
    approx, details, _ = _lowpass(channel)
    embed_bits(approx, BITS, 48)
    again, _, _ = _lowpass(pywt.idwt2((approx, details), "haar"))
    assert [int(v > 0.5) for v in read_bits(again, 64, 48)] == BITS
