"""Product settings (camera, storage, detection, notification) stored in ``system_settings``.

The structs in ``schemas.settings`` hold every default and range; this service merges stored
values over the defaults, validates changes as a whole and tells subscribers (the pipeline, the
notifier) so a change applies live.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Invalid, NotFound
from schemas.db import SystemSetting
from schemas.settings import SETTINGS_CATEGORIES, decode_setting_value, encode_setting_value

log = logging.getLogger(__name__)

Listener = Callable[[str, msgspec.Struct], None]


class UnknownCategory(NotFound, KeyError):
    def __init__(self, category: str) -> None:
        super().__init__(
            f"unknown settings category {category!r}", {"categories": sorted(SETTINGS_CATEGORIES)}
        )


class InvalidSettings(Invalid, ValueError):
    """A change that fails validation; ``details`` lists each problem, nothing was stored."""

    code = "INVALID_SETTINGS"


class SettingsService:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, category: str) -> msgspec.Struct:
        struct_type = _struct_type(category)
        with self._session_factory() as session:
            rows = session.scalars(sa.select(SystemSetting).where(SystemSetting.category == category)).all()
        stored = {row.setting_key: decode_setting_value(row.setting_value, row.data_type) for row in rows}
        known = {name for name in struct_type.__struct_fields__}
        merged = {**msgspec.to_builtins(struct_type()), **{k: v for k, v in stored.items() if k in known}}
        try:
            return msgspec.convert(merged, struct_type)
        except msgspec.ValidationError as exc:
            # A hand-edited row out of range must not take the service down: fall back to defaults.
            log.error("stored %s settings are invalid (%s); using defaults", category, exc)
            return struct_type()

    def get_all(self) -> dict[str, msgspec.Struct]:
        return {category: self.get(category) for category in SETTINGS_CATEGORIES}

    def update(self, category: str, changes: dict[str, Any]) -> msgspec.Struct:
        struct_type = _struct_type(category)
        if not isinstance(changes, dict):
            raise InvalidSettings(f"{category} settings must be a JSON object", [])
        unknown = sorted(set(changes) - set(struct_type.__struct_fields__))
        if unknown:
            raise InvalidSettings(
                f"unknown {category} setting(s): {', '.join(unknown)}",
                [{"key": key, "message": "unknown setting"} for key in unknown],
            )
        with self._lock:
            current = msgspec.to_builtins(self.get(category))
            try:
                updated = msgspec.convert({**current, **changes}, struct_type)
            except msgspec.ValidationError as exc:
                raise InvalidSettings(f"invalid {category} settings: {exc}", [{"message": str(exc)}]) from None
            new_values = msgspec.to_builtins(updated)
            with self._session_factory.begin() as session:
                rows = {
                    row.setting_key: row
                    for row in session.scalars(
                        sa.select(SystemSetting).where(SystemSetting.category == category)
                    ).all()
                }
                for key in changes:
                    text, data_type = encode_setting_value(new_values[key])
                    row = rows.get(key)
                    if row is None:
                        session.add(
                            SystemSetting(category=category, setting_key=key, setting_value=text, data_type=data_type)
                        )
                    else:
                        row.setting_value, row.data_type = text, data_type
        for listener in self._listeners:
            try:
                listener(category, updated)
            except Exception:  # one broken subscriber must not undo a stored change
                log.exception("settings listener failed for %s", category)
        return updated


def _struct_type(category: str) -> type[msgspec.Struct]:
    try:
        return SETTINGS_CATEGORIES[category]
    except KeyError:
        raise UnknownCategory(category) from None
