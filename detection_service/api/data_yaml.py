"""data.yaml versions of a dataset (seed "DataYaml API"); see docs/data_yaml.md.

``dataset_ref`` is the dataset's numeric id or its ``dataset_id`` string. Handlers are sync and run
in a worker thread: they do blocking database and object-store I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from litestar import Controller, Request, Response, get, post, put

from detection_service.api.responses import ApiError, ok
from detection_service.services.data_yaml import (
    DatasetNotFound,
    DataYamlNotFound,
    DataYamlService,
    InvalidDataYaml,
)
from detection_service.storage.base import StorageUnavailable
from schemas.data_yaml import (
    DataYamlChange,
    DataYamlCreate,
    DataYamlInfo,
    DataYamlSummary,
    DataYamlUpdate,
    DataYamlValidate,
    ValidationResult,
)
from schemas.envelope import Envelope


def _service(request: Request[Any, Any, Any]) -> DataYamlService:
    # Built on first use from the app's session factory and store; stateless, so one per app.
    state = request.app.state
    service = getattr(state, "data_yaml_service", None)
    if service is None:
        service = DataYamlService(state.session_factory, state.object_store)
        state.data_yaml_service = service
    return service


@contextmanager
def _errors(dataset_ref: str) -> Iterator[None]:
    """Service exceptions -> the API's error envelope."""
    try:
        yield
    except DatasetNotFound:
        raise ApiError(404, "NOT_FOUND", f"dataset {dataset_ref!r} not found", {"dataset": dataset_ref}) from None
    except DataYamlNotFound as exc:
        raise ApiError(404, "NOT_FOUND", str(exc), {"dataset": dataset_ref}) from None
    except InvalidDataYaml as exc:
        raise ApiError(400, "INVALID_DATA_YAML", str(exc), exc.problems) from None
    except StorageUnavailable as exc:
        raise ApiError(503, "STORAGE_UNAVAILABLE", "object store unavailable", {"reason": str(exc)}) from None


class DataYamlController(Controller):
    path = "/api/datasets/{dataset_ref:str}/yaml"
    tags = ["Dataset YAML"]

    @get("/", sync_to_thread=True, summary="The dataset's active data.yaml")
    def get_active(self, request: Request[Any, Any, Any], dataset_ref: str) -> Response[Envelope[DataYamlInfo]]:
        with _errors(dataset_ref):
            info = _service(request).get_active(dataset_ref)
        if info is None:
            raise ApiError(404, "NOT_FOUND", "this dataset has no active data.yaml", {"dataset": dataset_ref})
        return ok(info)

    @post("/", sync_to_thread=True, summary="Upload a new data.yaml (validated; the first one becomes active)")
    def create(
        self, request: Request[Any, Any, Any], dataset_ref: str, data: DataYamlCreate
    ) -> Response[Envelope[DataYamlInfo]]:
        with _errors(dataset_ref):
            info = _service(request).create(dataset_ref, data.yaml_content, data.version, activate=data.activate)
        return ok(info, "data.yaml created", status_code=201)

    @get("/versions", sync_to_thread=True, summary="Every data.yaml of the dataset, newest first")
    def versions(
        self, request: Request[Any, Any, Any], dataset_ref: str
    ) -> Response[Envelope[list[DataYamlSummary]]]:
        with _errors(dataset_ref):
            return ok(_service(request).versions(dataset_ref))

    @get("/validate", sync_to_thread=True, summary="Validate a data.yaml given as a query parameter")
    def validate_query(
        self, request: Request[Any, Any, Any], dataset_ref: str, yaml_content: str
    ) -> Response[Envelope[ValidationResult]]:
        with _errors(dataset_ref):
            return ok(_service(request).validate(dataset_ref, yaml_content))

    @post("/validate", sync_to_thread=True, status_code=200, summary="Validate a data.yaml sent as JSON")
    def validate_body(
        self, request: Request[Any, Any, Any], dataset_ref: str, data: DataYamlValidate
    ) -> Response[Envelope[ValidationResult]]:
        with _errors(dataset_ref):
            return ok(_service(request).validate(dataset_ref, data.yaml_content))

    @get("/changes/{yaml_id:int}", sync_to_thread=True, summary="History of one data.yaml, newest first")
    def changes(
        self, request: Request[Any, Any, Any], dataset_ref: str, yaml_id: int
    ) -> Response[Envelope[list[DataYamlChange]]]:
        with _errors(dataset_ref):
            return ok(_service(request).changes(dataset_ref, yaml_id))

    @get("/{yaml_id:int}", sync_to_thread=True, summary="One data.yaml")
    def get_one(
        self, request: Request[Any, Any, Any], dataset_ref: str, yaml_id: int
    ) -> Response[Envelope[DataYamlInfo]]:
        with _errors(dataset_ref):
            return ok(_service(request).get(dataset_ref, yaml_id))

    @put("/{yaml_id:int}", sync_to_thread=True, summary="Replace a data.yaml's content (validated)")
    def update(
        self, request: Request[Any, Any, Any], dataset_ref: str, yaml_id: int, data: DataYamlUpdate
    ) -> Response[Envelope[DataYamlInfo]]:
        with _errors(dataset_ref):
            info, changed = _service(request).update(dataset_ref, yaml_id, data.yaml_content)
        return ok(info, "data.yaml updated" if changed else "data.yaml unchanged")

    @post("/{yaml_id:int}/activate", sync_to_thread=True, status_code=200, summary="Make this data.yaml the active one")
    def activate(
        self, request: Request[Any, Any, Any], dataset_ref: str, yaml_id: int
    ) -> Response[Envelope[DataYamlInfo]]:
        with _errors(dataset_ref):
            return ok(_service(request).activate(dataset_ref, yaml_id), "data.yaml activated")
