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
        super().__init__(f"unknown settings category {category!r}", {"categories": sorted(SETTINGS_CATEGORIES)})


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
        known = set(struct_type.__struct_fields__)
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
        """Change some settings of one category (``PUT /api/settings/{category}``), validated as a whole."""
        with self._lock:
            updated = self._validated(category, changes)
            self._commit({category: changes}, {category: updated})
        self._notify({category: updated})
        return updated

    def update_many(self, changes_by_category: dict[str, Any]) -> dict[str, msgspec.Struct]:
        """Change any subset of categories at once (``PUT /api/settings``): every category is
        validated first, then all of it is stored in one transaction, or nothing is (every problem
        of every category is listed in the error). Subscribers hear each changed category after
        the commit."""
        if not isinstance(changes_by_category, dict) or not changes_by_category:
            raise InvalidSettings(
                'settings must be a JSON object of categories, e.g. {"camera": {"fps": 15}}',
                [{"message": "expected an object with at least one category"}],
            )
        unknown_categories = sorted(set(changes_by_category) - set(SETTINGS_CATEGORIES))
        if unknown_categories:
            raise InvalidSettings(
                f"unknown settings categor{'y' if len(unknown_categories) == 1 else 'ies'}: "
                f"{', '.join(unknown_categories)}",
                [
                    {"category": name, "message": "unknown category", "categories": sorted(SETTINGS_CATEGORIES)}
                    for name in unknown_categories
                ],
            )
        with self._lock:
            updated: dict[str, msgspec.Struct] = {}
            problems: list[dict[str, Any]] = []
            for category, changes in changes_by_category.items():
                try:
                    updated[category] = self._validated(category, changes)
                except InvalidSettings as exc:
                    problems.extend({"category": category, **problem} for problem in exc.details or [])
                    if not exc.details:
                        problems.append({"category": category, "message": exc.message})
            if problems:
                names = sorted({str(problem["category"]) for problem in problems})
                raise InvalidSettings(f"invalid settings in {', '.join(names)}; nothing was changed", problems)
            self._commit(changes_by_category, updated)
        self._notify(updated)
        return updated

    def changed_elsewhere(self, category: str) -> msgspec.Struct:
        """Another process stored ``category`` (an API worker, for a detector worker: docs/deployment.md):
        read it again and tell the subscribers, as if it had changed here."""
        value = self.get(category)
        self._notify({category: value})
        return value

    def _commit(self, changes_by_category: dict[str, dict[str, Any]], updated: dict[str, msgspec.Struct]) -> None:
        """Store the changed keys of every category in one transaction."""
        with self._session_factory.begin() as session:
            for category, changes in changes_by_category.items():
                self._store(session, category, changes, msgspec.to_builtins(updated[category]))

    def _notify(self, updated: dict[str, msgspec.Struct]) -> None:
        for category, struct in updated.items():
            for listener in self._listeners:
                try:
                    listener(category, struct)
                except Exception:  # one broken subscriber must not undo a stored change
                    log.exception("settings listener failed for %s", category)

    def _validated(self, category: str, changes: Any) -> msgspec.Struct:
        struct_type = _struct_type(category)
        if not isinstance(changes, dict):
            raise InvalidSettings(f"{category} settings must be a JSON object", [])
        unknown = sorted(set(changes) - set(struct_type.__struct_fields__))
        if unknown:
            raise InvalidSettings(
                f"unknown {category} setting(s): {', '.join(unknown)}",
                [{"key": key, "message": "unknown setting"} for key in unknown],
            )
        current = msgspec.to_builtins(self.get(category))
        try:
            return msgspec.convert({**current, **changes}, struct_type)
        except msgspec.ValidationError as exc:
            raise InvalidSettings(f"invalid {category} settings: {exc}", [{"message": str(exc)}]) from None

    @staticmethod
    def _store(session: Session, category: str, changes: dict[str, Any], new_values: dict[str, Any]) -> None:
        rows = {
            row.setting_key: row
            for row in session.scalars(sa.select(SystemSetting).where(SystemSetting.category == category)).all()
        }
        for key in changes:
            text, data_type = encode_setting_value(new_values[key])
            row = rows.get(key)
            if row is None:
                session.add(SystemSetting(category=category, setting_key=key, setting_value=text, data_type=data_type))
            else:
                row.setting_value, row.data_type = text, data_type


def _struct_type(category: str) -> type[msgspec.Struct]:
    try:
        return SETTINGS_CATEGORIES[category]
    except KeyError:
        raise UnknownCategory(category) from None
