"""Dataset API (``/api/datasets``): list, detail, create, new version from an export, auto-collect
and Roboflow sync (the last two as background jobs). See docs/datasets.md.

Handlers are sync (``sync_to_thread=True``); bodies are declared and typed: the seed's upload
(``update``) as a multipart form (``ExportUploadForm``), the server-path import (``import``) as JSON
(``UpdateDatasetRequest``). Dataset, export and store errors are domain errors
(``detection_service/errors.py``): they propagate to the app's one exception handler."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import msgspec
import sqlalchemy as sa
from litestar import Controller, Response, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.handlers import BaseRouteHandler
from litestar.params import Body
from sqlalchemy.orm import Session, sessionmaker

from detection_service.api.responses import ok
from detection_service.config import Settings
from detection_service.datasets.importer import (
    create_dataset,
    import_dataset,
    parse_changes,
    slugify,
    validate_dataset_id,
    version_prefix,
)
from detection_service.datasets.roboflow_sync import roboflow_credentials
from detection_service.errors import Forbidden, Invalid, NotFound, UnsupportedMedia
from detection_service.services.data_yaml import DataYamlService
from detection_service.services.job_queue import BatchJobView, JobService, queue_dataset_materialize
from detection_service.storage import ObjectStore
from schemas.batch_jobs import DatasetUpdate
from schemas.datasets import (
    AutoCollectRequest,
    CreateDatasetRequest,
    DatasetDetail,
    DatasetVersionView,
    DatasetView,
    ImportResult,
    RoboflowSyncRequest,
    UpdateDatasetRequest,
)
from schemas.db import Dataset, DatasetVersion
from schemas.envelope import Envelope


class ExportUploadForm(msgspec.Struct, kw_only=True):
    """The multipart form of ``PUT /api/datasets/{ref}/update`` (other fields are ignored)."""

    file: UploadFile | None = None  # the Roboflow YOLO export zip ...
    images: UploadFile | None = None  # ... or under this name
    version: str | None = None  # label of the new version; default the next "vN"
    strict: bool = False  # any rejected file rejects the whole import
    merge: bool = False  # carry the latest version's files over (else the export replaces them)
    class_mapping: str | None = None  # JSON text {"export name": "model class" or null}


def _multipart_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A guard: the upload endpoint takes a multipart form only; 415 (not a confusing form error)
    for anything else, and where a server path goes instead."""
    media_type = (connection.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedMedia(
            "send multipart/form-data with the export zip in 'file'; for an export on the server use "
            'PUT /api/datasets/{ref}/import with JSON {"source_path": ...}',
            {"content_type": media_type or None},
        )


def _view(dataset: Dataset, version_count: int) -> DatasetView:
    return DatasetView(**_view_fields(dataset, version_count))


def _view_fields(dataset: Dataset, version_count: int) -> dict[str, Any]:
    return {
        "id": dataset.id,
        "dataset_id": dataset.dataset_id,
        "name": dataset.name,
        "description": dataset.description,
        "version": dataset.version or None,
        "storage_path": dataset.storage_path,
        "yaml_path": dataset.yaml_path or None,
        "total_images": dataset.total_images,
        "total_labels": dataset.total_labels,
        "class_distribution": dataset.class_distribution,
        "roboflow_project": dataset.roboflow_project,
        "roboflow_version": dataset.roboflow_version,
        "last_sync_at": dataset.last_sync_at,
        "is_active": dataset.is_active,
        "created_at": dataset.created_at,
        "updated_at": dataset.updated_at,
        "version_count": version_count,
    }


def _version_view(dataset: Dataset, row: DatasetVersion) -> DatasetVersionView:
    changes = parse_changes(row.changes)
    if changes is not None and isinstance(changes.get("events_collected"), list):
        changes = {**changes, "events_collected": len(changes["events_collected"])}  # a count, not the ids
    return DatasetVersionView(
        version=row.version,
        image_count=row.image_count,
        created_at=row.created_at,
        yaml_path=version_prefix(dataset.dataset_id, row.version) + "data.yaml",
        changes=changes,
    )


def _find(session: Session, ident: str) -> Dataset | None:
    """By numeric id when ``ident`` is all digits (dataset_ids never are), else by dataset_id."""
    if ident.isascii() and ident.isdigit():  # not '¹', which isdigit() alone accepts
        return session.get(Dataset, int(ident))
    return session.scalar(sa.select(Dataset).where(Dataset.dataset_id == ident))


def _not_found(ident: str) -> NotFound:
    return NotFound(f"no dataset {ident!r}", {"id": ident})


def _list(session_factory: sessionmaker[Session]) -> list[DatasetView]:
    with session_factory() as session:
        counts = dict(
            session.execute(
                sa.select(DatasetVersion.dataset_id, sa.func.count(DatasetVersion.id)).group_by(
                    DatasetVersion.dataset_id
                )
            )
            .tuples()
            .all()
        )
        datasets = session.scalars(sa.select(Dataset).order_by(Dataset.id)).all()
        return [_view(d, counts.get(d.id, 0)) for d in datasets]


def _detail(session_factory: sessionmaker[Session], ident: str) -> DatasetDetail:
    with session_factory() as session:
        dataset = _find(session, ident)
        if dataset is None:
            raise _not_found(ident)
        rows = session.scalars(
            sa.select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id).order_by(DatasetVersion.id)
        ).all()
        return DatasetDetail(**_view_fields(dataset, len(rows)), versions=[_version_view(dataset, r) for r in rows])


def _require(session_factory: sessionmaker[Session], ident: str) -> str:
    with session_factory() as session:
        dataset = _find(session, ident)
        if dataset is None:
            raise _not_found(ident)
        return dataset.dataset_id


# --------------------------------------------------------------------------------- uploads


def _allowed_source(path_text: str, settings: Settings) -> Path:
    """A JSON ``source_path`` must point into ``settings.import_dirs`` (AIDOOR_DATASET_IMPORT_DIRS,
    default ``<data dir>/imports``): the API has no login, so it must not read any file of the
    server it is asked to."""
    allowed = settings.import_dirs
    path = Path(path_text).expanduser()
    if not path.is_absolute():
        path = allowed[0] / path
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        raise Forbidden(
            "source_path must be inside one of the import folders (AIDOOR_DATASET_IMPORT_DIRS)",
            {"source_path": path_text, "import_dirs": [str(p) for p in allowed]},
            code="SOURCE_PATH_NOT_ALLOWED",
        )
    return resolved


def _form_mapping(value: Any) -> dict[str, str | None] | None:
    if value in (None, ""):
        return None
    try:
        mapping = json.loads(str(value))
    except ValueError:
        mapping = None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in mapping.items()
    ):
        raise Invalid('class_mapping must be a JSON object {"name": "model class" or null}', code="VALIDATION_ERROR")
    return mapping


def _save_upload(upload: UploadFile, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="upload-", dir=directory)) / "export.zip"
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return path


# --------------------------------------------------------------------------------- controller


class DatasetController(Controller):
    path = "/api/datasets"
    tags = ["Datasets"]

    @get("/", sync_to_thread=True, summary="All datasets")
    def list_datasets(self, session_factory: sessionmaker[Session]) -> Response[Envelope[list[DatasetView]]]:
        return ok(_list(session_factory))

    @get("/{dataset_ref:str}", sync_to_thread=True, summary="One dataset (numeric id or dataset_id) with its versions")
    def get_dataset(
        self, session_factory: sessionmaker[Session], dataset_ref: str
    ) -> Response[Envelope[DatasetDetail]]:
        return ok(_detail(session_factory, dataset_ref))

    @post("/create", sync_to_thread=True, summary="A new, empty dataset", status_code=201)
    def create(
        self, session_factory: sessionmaker[Session], data: CreateDatasetRequest
    ) -> Response[Envelope[DatasetView]]:
        dataset = create_dataset(session_factory, data.name, data.description, data.dataset_id)
        return ok(_view(dataset, 0), message=f"dataset {dataset.dataset_id} created", status_code=201)

    @put(
        "/{dataset_ref:str}/update",
        sync_to_thread=True,
        guards=[_multipart_only],
        summary="New version from an uploaded Roboflow YOLO export (multipart: the zip in 'file')",
        description="Form fields: file (or images): the export zip; version (default the next vN); strict, merge "
        '(true/false); class_mapping (JSON text {"export name": "model class" or null}). Other content types: 415 '
        "(an export on the server: PUT /api/datasets/{ref}/import).",
    )
    def update(
        self,
        session_factory: sessionmaker[Session],
        object_store: ObjectStore,
        settings: Settings,
        data_yaml_service: DataYamlService,
        dataset_ref: str,
        data: Annotated[ExportUploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[Envelope[ImportResult]]:
        dataset_id = _require(session_factory, dataset_ref)
        upload = data.file or data.images
        if upload is None:
            raise Invalid("send the export zip in the form field 'file' (or 'images')", code="MISSING_FILE")
        options = {
            "version": (data.version or "").strip() or None,
            "strict": data.strict,
            "merge": data.merge,
            "class_mapping": _form_mapping(data.class_mapping),
        }
        work_dir = settings.data_dir / "tmp" / "dataset-imports"
        upload_path = _save_upload(upload, work_dir)
        try:
            result = import_dataset(
                session_factory,
                object_store,
                upload_path,
                dataset_id,
                source_kind="upload",
                source_name=upload.filename or "upload.zip",
                work_dir=work_dir,
                **options,
            )
        finally:
            shutil.rmtree(upload_path.parent, ignore_errors=True)
        _after_import(session_factory, data_yaml_service, result.dataset_id, result.version)
        return ok(result, message=f"dataset {dataset_id} version {result.version} created")

    @put(
        "/{dataset_ref:str}/import",
        sync_to_thread=True,
        summary="New version from an export folder or zip on the server: JSON {source_path}",
        description="source_path must lie inside the import folders (AIDOOR_DATASET_IMPORT_DIRS, default "
        "<data dir>/imports; 403 SOURCE_PATH_NOT_ALLOWED otherwise); version, strict, merge and class_mapping as "
        "for the upload.",
    )
    def import_from_path(
        self,
        session_factory: sessionmaker[Session],
        object_store: ObjectStore,
        settings: Settings,
        data_yaml_service: DataYamlService,
        dataset_ref: str,
        data: UpdateDatasetRequest,
    ) -> Response[Envelope[ImportResult]]:
        dataset_id = _require(session_factory, dataset_ref)
        source = _allowed_source(data.source_path, settings)
        result = import_dataset(
            session_factory,
            object_store,
            source,
            dataset_id,
            source_kind="path",
            source_name=source.name,
            work_dir=settings.data_dir / "tmp" / "dataset-imports",
            version=data.version,
            strict=data.strict,
            merge=data.merge,
            class_mapping=data.class_mapping,
        )
        _after_import(session_factory, data_yaml_service, result.dataset_id, result.version)
        return ok(result, message=f"dataset {dataset_id} version {result.version} created")

    @post(
        "/auto-collect",
        sync_to_thread=True,
        summary="Add verified events to a dataset (background job)",
        status_code=202,
    )
    def auto_collect(
        self, session_factory: sessionmaker[Session], jobs: JobService, data: AutoCollectRequest
    ) -> Response[Envelope[BatchJobView]]:
        dataset_id = _require(session_factory, data.dataset_id)
        job = jobs.submit(
            DatasetUpdate(
                source="auto_collect",
                dataset_id=dataset_id,
                auto_label=data.auto_label,
                since_version=data.since_version,
            ),
            f"auto-collect -> {dataset_id}",
        )
        return ok(job, message="auto-collect queued", status_code=202)

    @post(
        "/roboflow/sync",
        sync_to_thread=True,
        summary="Import a Roboflow dataset version (background job)",
        status_code=202,
    )
    def roboflow_sync(
        self, settings: Settings, jobs: JobService, data: RoboflowSyncRequest
    ) -> Response[Envelope[BatchJobView]]:
        credentials = roboflow_credentials(settings)  # RoboflowNotConfigured: 400
        project = data.project_name.strip()
        version = str(data.version).strip()
        if not project or "/" in project:
            raise Invalid("project_name must be a Roboflow project id (no '/')", code="VALIDATION_ERROR")
        if not version.isdigit():
            raise Invalid("version must be a Roboflow version number", {"version": version}, code="VALIDATION_ERROR")
        dataset_id = validate_dataset_id(data.dataset_id or slugify(project))  # InvalidDatasetId: 400
        job = jobs.submit(
            # No API key here: parameters are stored in batch_jobs; the job reads it from the settings.
            DatasetUpdate(
                source="roboflow",
                workspace=credentials.workspace,
                project_name=project,
                version=int(version),
                dataset_id=dataset_id,
                class_mapping=data.class_mapping,
            ),
            f"roboflow {project}/{version} -> {dataset_id}",
        )
        return ok(job, message="Roboflow sync queued", status_code=202)


def _after_import(
    session_factory: sessionmaker[Session], data_yaml_service: DataYamlService, dataset_id: str, version: str
) -> None:
    """Record the new version's data.yaml now (the DataYaml API answers at once) and queue the
    Dagster materialization of its assets (it runs whenever Dagster is up)."""
    data_yaml_service.ensure_generated(dataset_id, version)
    queue_dataset_materialize(session_factory, dataset_id, version)
