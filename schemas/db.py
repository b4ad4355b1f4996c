"""The database contract: SQLAlchemy 2 models for the seed's 17 tables.

Portable to SQLite, MariaDB 10.11 and MySQL 8. Deviations from the seed SQL and the columns added
to it are listed in ``docs/schema.md``; Alembic migrations under ``schemas/migrations`` create
exactly this schema (``alembic check`` compares the two).

Conventions:
- Timestamps are naive UTC ``DATETIME`` (second precision, see :class:`UTCDateTime`); aware
  datetimes are converted to UTC on the way in.
- The seed's JSONB columns are ``JSON`` (MariaDB stores LONGTEXT + ``CHECK (json_valid(..))``).
- ``created_by``/``updated_by`` are free-text actor names where the seed has VARCHAR, and FKs to
  ``users.id`` where the seed has INTEGER.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# utf8mb4 for Korean text and emoji; unicode_ci exists on MariaDB and MySQL 8 alike (MySQL's
# default utf8mb4_0900_ai_ci does not exist on MariaDB 10.11). Set per table because a server's
# database default may be latin1.
MYSQL_TABLE_OPTIONS: Final[dict[str, str]] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

# Server-side default of the seed's "DEFAULT CURRENT_TIMESTAMP" columns; same text on all three
# databases. The ORM always sends a Python-side value, so this only serves raw SQL inserts.
CURRENT_TIMESTAMP = text("CURRENT_TIMESTAMP")


def utcnow() -> datetime:
    """Now, as the naive UTC datetime the database stores (whole seconds)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class UTCDateTime(TypeDecorator[datetime]):
    """``DATETIME`` holding naive UTC.

    Aware values are converted to UTC; microseconds are dropped on every database because MySQL
    would otherwise round them (and SQLite keep them), so the same value reads back everywhere.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.replace(microsecond=0)


def table_args(*items: Any) -> tuple[Any, ...]:
    """``__table_args__`` with the MySQL table options appended."""
    return (*items, dict(MYSQL_TABLE_OPTIONS))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, server_default=CURRENT_TIMESTAMP)


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow, server_default=CURRENT_TIMESTAMP
    )


def _flag(default: bool) -> Mapped[bool]:
    return mapped_column(Boolean(), nullable=False, default=default, server_default=true() if default else false())


def _count(default: int = 0) -> Mapped[int]:
    return mapped_column(Integer(), nullable=False, default=default, server_default=text(str(default)))


def _user_fk() -> Mapped[int | None]:
    # Audit references must not block deleting a user, nor vanish with one.
    return mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


# --- users and Telegram recipients -------------------------------------------------------------


class User(Base):
    __tablename__ = "users"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    # The seed's "password" column; only a hash (e.g. scrypt/argon2 string) is ever stored.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(100), unique=True)
    is_active: Mapped[bool] = _flag(True)
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="user", server_default="user")
    # Added (0007): set on the generated first-start admin; only password change is allowed until
    # a new password is chosen (docs/security.md).
    password_change_required: Mapped[bool] = _flag(False)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = _updated_at()


class ApiToken(Base):
    """Added (0007): a bearer token for scripts and cameras. Only its SHA-256 is stored; the token
    itself is shown once. ``role`` is admin, user, viewer or camera (WebSocket ingest only)."""

    __tablename__ = "api_tokens"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    token_prefix: Mapped[str] = mapped_column(String(16), nullable=False)  # shown in lists to tell tokens apart
    role: Mapped[str] = mapped_column(String(20), nullable=False)
    user_id: Mapped[int | None] = _user_fk()  # who created it (None: the CLI)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Added (0011): a camera token's camera (its WebSocket ingest only); NULL: every camera. No FK:
    # deleting a camera revokes its tokens (docs/cameras.md).
    camera_id: Mapped[int | None] = mapped_column(Integer())


class AuthSession(Base):
    """Added (0007): a dashboard login. The cookie holds a random id; only its SHA-256 is stored,
    with the session's CSRF token (sent back in the X-CSRF-Token header on writes)."""

    __tablename__ = "auth_sessions"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    session_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


class Telegram(Base):
    """A Telegram recipient (chat) and the bot that writes to it."""

    __tablename__ = "telegrams"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)  # Telegram user id
    chat_id: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)
    # Fernet-encrypted at rest (detection_service/notifications/crypto.py); never returned by the API.
    bot_token: Mapped[str] = mapped_column(String(200), nullable=False)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = _updated_at()


# --- detections --------------------------------------------------------------------------------


class ObjectType(Base):
    __tablename__ = "object_types"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)  # schemas.enums.ObjectTypeCode
    name: Mapped[str] = mapped_column(String(50), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    is_active: Mapped[bool] = _flag(True)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = _updated_at()


class Camera(Base):
    """Added (0009, docs/cameras.md): one camera. Row 1 ``default`` has no source of its own: it
    follows the camera settings (system_settings camera.*), as the seed's single camera did.
    ``settings`` holds per-camera overrides (fps, resolution, brightness, contrast,
    detection_enabled; ``schemas.cameras.CameraOverrides``)."""

    __tablename__ = "cameras"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    source: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = _flag(True)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON())
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = _updated_at()


DEFAULT_CAMERA_ID: Final[int] = 1


class DetectionEvent(Base):
    __tablename__ = "detection_events"
    # Plain (ascending) indexes: B-trees are scanned in either direction, and DESC index flags
    # would not round-trip through reflection on every backend (false autogenerate drift).
    __table_args__ = table_args(
        Index("idx_detection_events_detected_at", "detected_at"),
        Index("idx_detection_events_object_type", "object_type_id"),
        Index("idx_detection_events_status", "status"),
        Index("idx_detection_events_tracking_id", "tracking_id"),
        Index("idx_detection_events_type_detected_at", "object_type_id", "detected_at"),
        Index("idx_detection_events_status_detected_at", "status", "detected_at"),
        Index("uq_detection_events_event_uid", "event_uid", unique=True),
        Index("idx_detection_events_camera_detected_at", "camera_id", "detected_at"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    image_path: Mapped[str | None] = mapped_column(String(255))  # object-store key of the main snapshot
    object_type_id: Mapped[int] = mapped_column(ForeignKey("object_types.id"), nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(50))
    fps: Mapped[int | None] = mapped_column(Integer())
    processing_time: Mapped[int | None] = mapped_column(Integer())  # ms
    # DOUBLE: MySQL's FLOAT is single precision (0.87 would read back as 0.8700000047...).
    confidence_score: Mapped[float | None] = mapped_column(Double())
    bbox_coordinates: Mapped[str | None] = mapped_column(Text())  # JSON text, as in the seed
    notification_sent: Mapped[bool] = _flag(False)
    user_verified: Mapped[bool] = _flag(False)
    is_false_positive: Mapped[bool] = _flag(False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="active", server_default="active")
    # Reclassification by a user.
    original_type_id: Mapped[int | None] = mapped_column(ForeignKey("object_types.id"))
    reclassified_by: Mapped[int | None] = _user_fk()
    reclassified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Tracking (SORT/DeepSORT).
    tracking_id: Mapped[int | None] = mapped_column(Integer())
    tracking_duration: Mapped[int | None] = mapped_column(Integer())  # seconds
    # Added: when the object was first seen / last seen (the seed's index needs detected_at).
    detected_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), nullable=False, default=utcnow, server_default=CURRENT_TIMESTAMP
    )
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    # The pipeline's idempotency key (a UUID made when the event is confirmed): a replay of the
    # local journal after a commit that was not acknowledged finds the row instead of adding one.
    event_uid: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = _updated_at()
    # Added (0009): the camera that saw it; the seed's single camera is 1.
    camera_id: Mapped[int] = mapped_column(
        ForeignKey("cameras.id"), nullable=False, default=DEFAULT_CAMERA_ID, server_default=text("1")
    )

    object_type: Mapped[ObjectType] = relationship(foreign_keys=[object_type_id])
    original_type: Mapped[ObjectType | None] = relationship(foreign_keys=[original_type_id])
    images: Mapped[list[EventImage]] = relationship(
        back_populates="event",
        order_by="EventImage.sequence_number",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class EventImage(Base):
    """One of the consecutive captures of an event."""

    __tablename__ = "event_images"
    __table_args__ = table_args(
        UniqueConstraint("event_id", "sequence_number"),
        Index("idx_event_images_event_id", "event_id"),
        Index("idx_event_images_captured_at", "captured_at"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("detection_events.id", ondelete="CASCADE"), nullable=False)
    image_path: Mapped[str] = mapped_column(String(500), nullable=False)  # object-store key
    image_url: Mapped[str | None] = mapped_column(String(500))
    sequence_number: Mapped[int] = mapped_column(Integer(), nullable=False)  # 1..capture_count
    compression_quality: Mapped[int] = _count(85)
    captured_at: Mapped[datetime] = _created_at()

    event: Mapped[DetectionEvent] = relationship(back_populates="images")


# --- models and training -----------------------------------------------------------------------


class Model(Base):
    __tablename__ = "models"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)
    model_name: Mapped[str] = mapped_column(String(100), nullable=False)
    model_path: Mapped[str] = mapped_column(String(500), nullable=False)  # object-store key of the weights
    model_size: Mapped[int | None] = mapped_column(BigInteger())  # bytes
    version: Mapped[str] = mapped_column(String(20), nullable=False)
    accuracy: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    inference_time: Mapped[int | None] = mapped_column(Integer())  # ms
    is_current: Mapped[bool] = _flag(False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="ready", server_default="ready")
    # Added: full evaluation results (mAP50, per-class numbers...) and the exported ONNX file.
    metrics: Mapped[Any | None] = mapped_column(JSON())
    weights_onnx_path: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = _created_at()
    updated_by: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = _updated_at()


class ModelTraining(Base):
    __tablename__ = "model_training"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    # SET NULL: training history outlives a deleted model or dataset.
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    job_name: Mapped[str] = mapped_column(String(100), nullable=False)
    job_type: Mapped[str] = mapped_column(String(20), nullable=False)  # train, retrain, update
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending", server_default="pending")
    epochs: Mapped[int] = _count(100)
    batch_size: Mapped[int] = _count(16)
    confidence_threshold: Mapped[Decimal] = mapped_column(
        Numeric(3, 2), nullable=False, default=Decimal("0.50"), server_default="0.50"
    )
    sensitivity: Mapped[str] = mapped_column(String(10), nullable=False, default="medium", server_default="medium")
    final_accuracy: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    training_loss: Mapped[Decimal | None] = mapped_column(Numeric(10, 6))
    validation_loss: Mapped[Decimal | None] = mapped_column(Numeric(10, 6))
    training_time: Mapped[int | None] = mapped_column(Integer())  # seconds
    current_epoch: Mapped[int] = _count(0)
    progress_percentage: Mapped[int] = _count(0)
    log_path: Mapped[str | None] = mapped_column(String(500))
    # Added: the Dagster run doing the work, its metrics and why it failed.
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[Any | None] = mapped_column(JSON())
    error_message: Mapped[str | None] = mapped_column(Text())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = _created_at()

    model: Mapped[Model | None] = relationship()
    dataset: Mapped[Dataset | None] = relationship()


# --- datasets and data.yaml --------------------------------------------------------------------


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(String(50), nullable=False, unique=True)  # e.g. packages_v2.1
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    version: Mapped[str] = mapped_column(String(20), nullable=False)
    storage_path: Mapped[str] = mapped_column(String(500), nullable=False)
    yaml_path: Mapped[str] = mapped_column(String(500), nullable=False)
    total_images: Mapped[int] = _count(0)
    total_labels: Mapped[int] = _count(0)
    class_distribution: Mapped[Any | None] = mapped_column(JSON())
    roboflow_project: Mapped[str | None] = mapped_column(String(100))
    roboflow_version: Mapped[str | None] = mapped_column(String(20))
    last_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    is_active: Mapped[bool] = _flag(True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True, order_by="DatasetVersion.id"
    )
    yamls: Mapped[list[DataYaml]] = relationship(
        back_populates="dataset", cascade="all, delete-orphan", passive_deletes=True, order_by="DataYaml.id"
    )


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True)
    version: Mapped[str] = mapped_column(String(20), nullable=False)
    changes: Mapped[str | None] = mapped_column(Text())
    image_count: Mapped[int] = _count(0)
    created_by: Mapped[int | None] = _user_fk()
    created_at: Mapped[datetime] = _created_at()

    dataset: Mapped[Dataset] = relationship(back_populates="versions")


class DataYaml(Base):
    """A data.yaml of a dataset. ``is_active`` is TRUE or NULL (inactive), never FALSE.

    The seed's ``UNIQUE (dataset_id, is_active)`` then allows one active YAML per dataset and any
    number of inactive ones (NULLs never collide in a UNIQUE key); the CHECK keeps FALSE out.
    Activate by setting the old one to NULL and the new one to TRUE in one transaction, in that
    order.
    """

    __tablename__ = "data_yaml"
    __table_args__ = table_args(
        UniqueConstraint("dataset_id", "is_active", name="unique_active_yaml"),
        CheckConstraint("is_active = 1", name="active_true_or_null"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False)
    yaml_content: Mapped[str] = mapped_column(Text(), nullable=False)
    train_path: Mapped[str | None] = mapped_column(String(500))
    val_path: Mapped[str | None] = mapped_column(String(500))
    test_path: Mapped[str | None] = mapped_column(String(500))
    nc: Mapped[int] = mapped_column(Integer(), nullable=False)
    names: Mapped[Any] = mapped_column(JSON(), nullable=False)
    download_url: Mapped[str | None] = mapped_column(String(500))
    yaml_version: Mapped[str | None] = mapped_column(String(20))
    file_hash: Mapped[str | None] = mapped_column(String(64))  # SHA-256 hex of yaml_content
    is_active: Mapped[bool | None] = mapped_column(Boolean(), nullable=True, default=None)
    created_by: Mapped[int | None] = _user_fk()
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    dataset: Mapped[Dataset] = relationship(back_populates="yamls")
    history: Mapped[list[DataYamlHistory]] = relationship(
        back_populates="yaml_config", cascade="all, delete-orphan", passive_deletes=True, order_by="DataYamlHistory.id"
    )


class DataYamlHistory(Base):
    __tablename__ = "data_yaml_history"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    yaml_config_id: Mapped[int] = mapped_column(
        ForeignKey("data_yaml.id", ondelete="CASCADE"), nullable=False, index=True
    )
    change_type: Mapped[str] = mapped_column(String(20), nullable=False)  # schemas.enums.YamlChangeType
    old_content: Mapped[str | None] = mapped_column(Text())
    new_content: Mapped[str | None] = mapped_column(Text())
    changes_summary: Mapped[Any | None] = mapped_column(JSON())
    changed_by: Mapped[int | None] = _user_fk()
    changed_at: Mapped[datetime] = _created_at()

    yaml_config: Mapped[DataYaml] = relationship(back_populates="history")


# --- notifications -----------------------------------------------------------------------------


class NotificationTemplate(Base):
    __tablename__ = "notification_templates"
    __table_args__ = table_args()

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    template_key: Mapped[str] = mapped_column(String(20), nullable=False, unique=True)  # TEXT_0..TEXT_4
    object_type_id: Mapped[int | None] = mapped_column(ForeignKey("object_types.id"))
    message_text: Mapped[str] = mapped_column(Text(), nullable=False)
    is_active: Mapped[bool] = _flag(True)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    object_type: Mapped[ObjectType | None] = relationship()


class NotificationHistory(Base):
    """One alert to one recipient, and the persistent queue of the Telegram worker
    (docs/notifications.md): written ``pending`` with its event, claimed as ``sending``, then
    ``sent`` or ``failed``."""

    __tablename__ = "notification_history"
    __table_args__ = table_args(
        Index("idx_notification_history_sent_at", "sent_at"),
        Index("idx_notification_history_send_status", "send_status"),
        # The worker's query: due rows by status and time.
        Index("idx_notification_history_status_next_attempt", "send_status", "next_attempt_at"),
        # One alert of a kind per event and recipient, whatever retries or restarts happen.
        Index("uq_notification_history_event_recipient_kind", "event_id", "telegram_user_id", "kind", unique=True),
        Index("idx_notification_history_chat_message", "chat_id", "telegram_message_id"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    # SET NULL: the record of what was sent survives the clean-up of old events; the index
    # keeps that clean-up from scanning this table.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("detection_events.id", ondelete="SET NULL"), index=True)
    telegram_user_id: Mapped[int | None] = mapped_column(ForeignKey("telegrams.id", ondelete="SET NULL"))
    template_id: Mapped[int | None] = mapped_column(ForeignKey("notification_templates.id", ondelete="SET NULL"))
    message_text: Mapped[str] = mapped_column(Text(), nullable=False)
    send_status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending", server_default="pending")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_message: Mapped[str | None] = mapped_column(Text())
    retry_count: Mapped[int] = _count(0)
    created_at: Mapped[datetime] = _created_at()
    # Added (0003): event / removed (package taken away) / test
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="event", server_default="event")
    # pending: when the row is due; sending: when the worker's claim (lease) expires.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_token: Mapped[str | None] = mapped_column(String(32))  # the worker holding a sending row
    chat_id: Mapped[str | None] = mapped_column(String(50))  # where it went (kept if the recipient is removed)
    telegram_message_id: Mapped[int | None] = mapped_column(BigInteger())  # for edits after a button press
    has_photo: Mapped[bool] = _flag(False)  # sent as a photo with caption (else a text message)
    callback_result: Mapped[str | None] = mapped_column(String(100))  # what a button press on it did


# --- system ------------------------------------------------------------------------------------


class SystemSetting(Base):
    """One product setting; categories and keys are the structs of ``schemas.settings``."""

    __tablename__ = "system_settings"
    __table_args__ = table_args(UniqueConstraint("category", "setting_key"))

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    category: Mapped[str] = mapped_column(String(50), nullable=False)
    setting_key: Mapped[str] = mapped_column(String(100), nullable=False)
    setting_value: Mapped[str] = mapped_column(Text(), nullable=False)
    data_type: Mapped[str] = mapped_column(String(20), nullable=False, default="string", server_default="string")
    description: Mapped[str | None] = mapped_column(Text())
    is_encrypted: Mapped[bool] = _flag(False)
    updated_by: Mapped[int | None] = _user_fk()
    updated_at: Mapped[datetime] = _updated_at()


class SystemStatusLog(Base):
    __tablename__ = "system_status_logs"
    __table_args__ = table_args(Index("idx_system_status_logs_logged_at", "logged_at"))

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    component: Mapped[str] = mapped_column(String(50), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    cpu_usage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    memory_usage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    gpu_usage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    disk_usage: Mapped[Decimal | None] = mapped_column(Numeric(5, 2))
    fps: Mapped[int | None] = mapped_column(Integer())
    error_message: Mapped[str | None] = mapped_column(Text())
    # "metadata" is reserved on declarative classes; the column keeps the seed's name.
    metadata_: Mapped[Any | None] = mapped_column("metadata", JSON())
    logged_at: Mapped[datetime] = _created_at()


class SystemLog(Base):
    __tablename__ = "system_logs"
    __table_args__ = table_args(
        Index("idx_system_logs_created_at", "created_at"),
        Index("idx_system_logs_level", "level"),
        Index("idx_system_logs_component", "component"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    level: Mapped[str] = mapped_column(String(10), nullable=False)  # schemas.enums.LogLevel
    component: Mapped[str] = mapped_column(String(50), nullable=False)
    message: Mapped[str] = mapped_column(Text(), nullable=False)
    details: Mapped[Any | None] = mapped_column(JSON())
    user_id: Mapped[int | None] = _user_fk()
    created_at: Mapped[datetime] = _created_at()


class BatchJob(Base):
    __tablename__ = "batch_jobs"
    __table_args__ = table_args(
        Index("idx_batch_jobs_status", "status"),
        Index("idx_batch_jobs_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    job_type: Mapped[str] = mapped_column(String(50), nullable=False)
    job_name: Mapped[str] = mapped_column(String(100), nullable=False)
    status: Mapped[str] = mapped_column(String(20), nullable=False, default="pending", server_default="pending")
    priority: Mapped[int] = _count(5)  # 1 (highest) .. 10
    parameters: Mapped[Any | None] = mapped_column(JSON())
    progress_percentage: Mapped[int] = _count(0)
    current_step: Mapped[str | None] = mapped_column(String(100))
    total_steps: Mapped[int | None] = mapped_column(Integer())
    result: Mapped[Any | None] = mapped_column(JSON())
    error_message: Mapped[str | None] = mapped_column(Text())
    # Added: the Dagster run executing the job.
    dagster_run_id: Mapped[str | None] = mapped_column(String(64))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = _user_fk()
    created_at: Mapped[datetime] = _created_at()


TABLE_NAMES: Final[tuple[str, ...]] = (
    "users",
    "telegrams",
    "object_types",
    "detection_events",
    "event_images",
    "models",
    "model_training",
    "datasets",
    "dataset_versions",
    "data_yaml",
    "data_yaml_history",
    "notification_templates",
    "notification_history",
    "system_settings",
    "system_status_logs",
    "system_logs",
    "batch_jobs",
)
# Added by 0007 (docs/security.md): API tokens and dashboard sessions.
AUTH_TABLE_NAMES: Final[tuple[str, ...]] = ("api_tokens", "auth_sessions")
# Added by 0009 (docs/cameras.md).
CAMERA_TABLE_NAMES: Final[tuple[str, ...]] = ("cameras",)
