"""The one error type services raise for an answer the client must see; the app's exception
handler turns it into the error envelope (detection_service/api/responses.py)."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
