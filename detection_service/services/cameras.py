"""The cameras table (docs/cameras.md): list, read, create, change, delete, with the checks that
make a bad request a 4xx and change nothing.

Camera 1 ``default`` is the seed's camera: it cannot be deleted and its source is the camera
settings' (``PUT /api/settings/camera``), so its row has none. Deleting a camera that has events
is refused (409 CAMERA_HAS_EVENTS): disable it instead, its history stays filterable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from detection_service.errors import Conflict, Invalid, NotFound
from schemas.cameras import CameraCreate, CameraOverrides, CameraUpdate
from schemas.db import DEFAULT_CAMERA_ID, ApiToken, Camera, DetectionEvent, utcnow

MAX_CAMERAS = 32  # one detector serves them all; far past what a CPU box batches usefully


class CameraRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A camera row, detached from its session (the runtime and the API read these)."""

    id: int
    name: str
    source: str | None
    enabled: bool
    settings: CameraOverrides
    created_by: str | None
    created_at: Any
    updated_by: str | None
    updated_at: Any

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_CAMERA_ID

    @property
    def runs(self) -> bool:
        """Whether its pipeline should run (enabled and detection not switched off)."""
        return self.enabled and self.settings.detection_enabled


def _record(row: Camera) -> CameraRecord:
    try:
        overrides = msgspec.convert(row.settings or {}, CameraOverrides)
    except msgspec.ValidationError:  # edited by hand in the database: fall back to the camera settings
        overrides = CameraOverrides()
    return CameraRecord(
        id=row.id,
        name=row.name,
        source=row.source,
        enabled=row.enabled,
        settings=overrides,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )


def _check_source(source: str) -> None:
    if not source.strip():
        raise Invalid("source must not be blank", {"field": "source"}, code="INVALID_CAMERA")


class CameraService:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener()`` after every committed change (the runtime re-reads the cameras)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def changed_elsewhere(self) -> None:
        """Another process changed the cameras table (an API worker, for a detector worker:
        docs/deployment.md): tell the listeners, as if it had changed here."""
        self._changed()

    # -- reads ----------------------------------------------------------------------------

    def list(self) -> list[CameraRecord]:
        with self.session_factory() as session:
            return [_record(r) for r in session.scalars(sa.select(Camera).order_by(Camera.id))]

    def get(self, camera_id: int) -> CameraRecord:
        with self.session_factory() as session:
            row = session.get(Camera, camera_id)
            if row is None:
                raise NotFound(f"no camera {camera_id}", {"camera_id": camera_id}, code="CAMERA_NOT_FOUND")
            return _record(row)

    def require(self, camera_id: int | None) -> int:
        """``camera_id`` if that camera exists (404 otherwise); the default camera for None."""
        if camera_id is None:
            return DEFAULT_CAMERA_ID
        return self.get(camera_id).id

    # -- writes ---------------------------------------------------------------------------

    def create(self, data: CameraCreate, by: str | None = None) -> CameraRecord:
        with self.session_factory.begin() as session:
            if (session.scalar(sa.select(sa.func.count(Camera.id))) or 0) >= MAX_CAMERAS:
                raise Conflict(f"at most {MAX_CAMERAS} cameras", {"max": MAX_CAMERAS}, code="TOO_MANY_CAMERAS")
            self._check_name(session, data.name.strip(), None)
            _check_source(data.source)
            row = Camera(
                name=data.name.strip(),
                source=data.source.strip(),
                enabled=data.enabled,
                settings=msgspec.to_builtins(data.overrides),
                created_by=by,
                updated_by=by,
            )
            session.add(row)
            try:
                session.flush()
            except IntegrityError:  # a concurrent create took the name
                raise Conflict(f"a camera named {data.name!r} exists", code="CAMERA_NAME_TAKEN") from None
            record = _record(row)
        self._changed()
        return record

    def update(self, camera_id: int, data: CameraUpdate, by: str | None = None) -> CameraRecord:
        with self.session_factory.begin() as session:
            row = session.get(Camera, camera_id)
            if row is None:
                raise NotFound(f"no camera {camera_id}", {"camera_id": camera_id}, code="CAMERA_NOT_FOUND")
            if data.source is not None and camera_id == DEFAULT_CAMERA_ID:
                raise Invalid(
                    "the default camera's source is the camera settings: change it with PUT /api/settings/camera",
                    {"camera_id": camera_id},
                    code="DEFAULT_CAMERA_SOURCE",
                )
            if data.overrides is not None and camera_id == DEFAULT_CAMERA_ID:
                tuned = sorted({**data.overrides.detection_changes(), **data.overrides.pipeline_changes()})
                if tuned:
                    raise Invalid(
                        "the default camera's detection and pipeline settings are the global ones: change them "
                        "with PUT /api/settings/detection or PUT /api/detection/config",
                        {"camera_id": camera_id, "fields": tuned},
                        code="DEFAULT_CAMERA_SETTINGS",
                    )
            if data.name is not None:
                self._check_name(session, data.name.strip(), camera_id)
                row.name = data.name.strip()
            if data.source is not None:
                _check_source(data.source)
                row.source = data.source.strip()
            if data.enabled is not None:
                row.enabled = data.enabled
            if data.overrides is not None:
                row.settings = msgspec.to_builtins(data.overrides)
            row.updated_by = by
            row.updated_at = utcnow()
            try:
                session.flush()
            except IntegrityError:
                raise Conflict(f"a camera named {data.name!r} exists", code="CAMERA_NAME_TAKEN") from None
            record = _record(row)
        self._changed()
        return record

    def delete(self, camera_id: int) -> None:
        if camera_id == DEFAULT_CAMERA_ID:
            raise Conflict("the default camera cannot be deleted", {"camera_id": camera_id}, code="DEFAULT_CAMERA")
        with self.session_factory.begin() as session:
            row = session.get(Camera, camera_id)
            if row is None:
                raise NotFound(f"no camera {camera_id}", {"camera_id": camera_id}, code="CAMERA_NOT_FOUND")
            events = session.scalar(
                sa.select(sa.func.count(DetectionEvent.id)).where(DetectionEvent.camera_id == camera_id)
            )
            if events:
                raise Conflict(
                    f"camera {camera_id} has {events} event(s): disable it instead (PUT enabled=false)",
                    {"camera_id": camera_id, "events": events},
                    code="CAMERA_HAS_EVENTS",
                )
            session.delete(row)
            # Its scoped camera tokens die with it: a later camera may get the same id.
            session.execute(
                sa.update(ApiToken)
                .where(ApiToken.camera_id == camera_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        self._changed()

    @staticmethod
    def _check_name(session: Session, name: str, own_id: int | None) -> None:
        if not name:
            raise Invalid("name must not be blank", {"field": "name"}, code="INVALID_CAMERA")
        other = session.scalar(sa.select(Camera.id).where(Camera.name == name))
        if other is not None and other != own_id:
            raise Conflict(f"a camera named {name!r} exists", {"camera_id": other}, code="CAMERA_NAME_TAKEN")
