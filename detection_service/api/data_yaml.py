"""data.yaml versions of a dataset (seed "DataYaml API"); see docs/data_yaml.md.

``dataset_ref`` is the dataset's numeric id or its ``dataset_id`` string. Handlers are sync and run
in a worker thread (``sync_to_thread=True``): they do blocking database and object-store I/O.
"""

from __future__ import annotations

from litestar import Controller, Response, get, post, put

from detection_service.api.params import RowId
from detection_service.api.responses import ok
from detection_service.errors import NotFound
from detection_service.services.data_yaml import DataYamlService
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


class DataYamlController(Controller):
    path = "/api/datasets/{dataset_ref:str}/yaml"
    tags = ["Dataset YAML"]

    @get("/", sync_to_thread=True, summary="The dataset's active data.yaml")
    def get_active(self, data_yaml_service: DataYamlService, dataset_ref: str) -> Response[Envelope[DataYamlInfo]]:
        info = data_yaml_service.get_active(dataset_ref)
        if info is None:
            raise NotFound("this dataset has no active data.yaml", {"dataset": dataset_ref})
        return ok(info)

    @post("/", sync_to_thread=True, summary="Upload a new data.yaml (validated; the first one becomes active)")
    def create(
        self, data_yaml_service: DataYamlService, dataset_ref: str, data: DataYamlCreate
    ) -> Response[Envelope[DataYamlInfo]]:
        info = data_yaml_service.create(dataset_ref, data.yaml_content, data.version, activate=data.activate)
        return ok(info, "data.yaml created", status_code=201)

    @get("/versions", sync_to_thread=True, summary="Every data.yaml of the dataset, newest first")
    def versions(
        self, data_yaml_service: DataYamlService, dataset_ref: str
    ) -> Response[Envelope[list[DataYamlSummary]]]:
        return ok(data_yaml_service.versions(dataset_ref))

    @get("/validate", sync_to_thread=True, summary="Validate a data.yaml given as a query parameter")
    def validate_query(
        self, data_yaml_service: DataYamlService, dataset_ref: str, yaml_content: str
    ) -> Response[Envelope[ValidationResult]]:
        return ok(data_yaml_service.validate(dataset_ref, yaml_content))

    @post("/validate", sync_to_thread=True, status_code=200, summary="Validate a data.yaml sent as JSON")
    def validate_body(
        self, data_yaml_service: DataYamlService, dataset_ref: str, data: DataYamlValidate
    ) -> Response[Envelope[ValidationResult]]:
        return ok(data_yaml_service.validate(dataset_ref, data.yaml_content))

    @get("/changes/{yaml_id:int}", sync_to_thread=True, summary="History of one data.yaml, newest first")
    def changes(
        self, data_yaml_service: DataYamlService, dataset_ref: str, yaml_id: RowId
    ) -> Response[Envelope[list[DataYamlChange]]]:
        return ok(data_yaml_service.changes(dataset_ref, yaml_id))

    @get("/{yaml_id:int}", sync_to_thread=True, summary="One data.yaml")
    def get_one(
        self, data_yaml_service: DataYamlService, dataset_ref: str, yaml_id: RowId
    ) -> Response[Envelope[DataYamlInfo]]:
        return ok(data_yaml_service.get(dataset_ref, yaml_id))

    @put("/{yaml_id:int}", sync_to_thread=True, summary="Replace a data.yaml's content (validated)")
    def update(
        self, data_yaml_service: DataYamlService, dataset_ref: str, yaml_id: RowId, data: DataYamlUpdate
    ) -> Response[Envelope[DataYamlInfo]]:
        info, changed = data_yaml_service.update(dataset_ref, yaml_id, data.yaml_content)
        return ok(info, "data.yaml updated" if changed else "data.yaml unchanged")

    @post("/{yaml_id:int}/activate", sync_to_thread=True, status_code=200, summary="Make this data.yaml the active one")
    def activate(
        self, data_yaml_service: DataYamlService, dataset_ref: str, yaml_id: RowId
    ) -> Response[Envelope[DataYamlInfo]]:
        return ok(data_yaml_service.activate(dataset_ref, yaml_id), "data.yaml activated")
