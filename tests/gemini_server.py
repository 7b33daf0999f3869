"""A local HTTP server on 127.0.0.1 that answers as the Gemini API's `generateContent` does (the only
call our provider makes), from a script of answers the test sets; it records every request.

Wire format (REST, camelCase JSON), as google-genai sends and parses it:
POST /v1beta/models/<model>:generateContent, header `x-goog-api-key`, body {"contents": [{"role": "user",
"parts": [{"text": ...}, {"inlineData": {"mimeType": ..., "data": <base64>}}, ...]}], "generationConfig":
{"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": ..., "imageSize": ...}, "seed": ...}}.
Answers: {"candidates": [{"content": {"role": "model", "parts": [{"inlineData": ...}]}, "finishReason":
"STOP"}], "promptFeedback": {"blockReason": ...}}; errors {"error": {"code", "message", "status"}}.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image


def png_b64(colour=(30, 160, 90), size=(48, 32)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Answer:
    status: int = 200
    body: bytes | dict | None = None
    delay: float = 0.0


def image_answer(colour=(30, 160, 90)) -> Answer:
    return Answer(body={"candidates": [{"content": {"role": "model", "parts": [
        {"text": "Here is your image."}, {"inlineData": {"mimeType": "image/png", "data": png_b64(colour)}}]},
        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1290}})


def blocked_prompt_answer(reason: str = "SAFETY") -> Answer:
    return Answer(body={"promptFeedback": {"blockReason": reason}})


def finished_without_image(reason: str = "IMAGE_SAFETY") -> Answer:
    return Answer(body={"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}]})


def error_answer(code: int, status: str, message: str) -> Answer:
    return Answer(status=code, body={"error": {"code": code, "message": message, "status": status}})


@dataclass
class GeminiServer:
    """`with GeminiServer() as server:` ... `server.answers.append(...)`; `server.requests` as received."""

    answers: list[Answer] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    default: Callable[[], Answer] = image_answer

    def __enter__(self) -> GeminiServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                owner.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "json": json.loads(raw or b"{}")})
                answer = owner.answers.pop(0) if owner.answers else owner.default()
                if answer.delay:
                    time.sleep(answer.delay)
                body = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body or {}).encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json; charset=UTF-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def parts(self, index: int = -1) -> list[dict[str, Any]]:
        return self.requests[index]["json"]["contents"][0]["parts"]
