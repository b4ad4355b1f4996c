"""Model API (seed): the deployed model, versions, deploy (champion/challenger gate), training."""

from __future__ import annotations

from litestar import Controller, Response, delete, get, post

from detection_service.api.responses import ok
from detection_service.errors import NotFound
from detection_service.services.models import ModelService
from schemas.envelope import Envelope
from schemas.models import DeployRequest, DeployResult, ModelInfo, RetrainStatus, TrainingStatus, TrainRequest

_TRUE = ("1", "true", "yes")


class ModelController(Controller):
    path = "/api/models"
    tags = ["Models"]

    @get("/current", sync_to_thread=True, summary="The deployed model")
    def current(self, model_service: ModelService) -> Response[Envelope[ModelInfo]]:
        model = model_service.current()
        if model is None:
            raise NotFound("no model is deployed yet (train one, or run `aidoor bootstrap-model`)", code="NO_MODEL")
        return ok(model)

    @get("/versions", sync_to_thread=True, summary="Every registered model, newest first")
    def versions(self, model_service: ModelService) -> Response[Envelope[list[ModelInfo]]]:
        return ok(model_service.versions())

    @get(
        "/{model_ref:str}/info",
        sync_to_thread=True,
        summary="One model with its evaluation (by model_id or numeric id)",
    )
    def info(self, model_service: ModelService, model_ref: str) -> Response[Envelope[ModelInfo]]:
        return ok(model_service.info(model_ref))

    @post(
        "/{model_ref:str}/deploy",
        status_code=200,
        sync_to_thread=True,
        summary="Switch the running detector to this model (champion/challenger gate unless force)",
    )
    def deploy(
        self, model_service: ModelService, model_ref: str, data: DeployRequest | None = None, force: str = ""
    ) -> Response[Envelope[DeployResult]]:
        result = model_service.deploy(model_ref, bool(data and data.force) or force.lower() in _TRUE)
        return ok(result, message=f"{result.model.model_id} deployed")

    @post("/train", status_code=202, sync_to_thread=True, summary="Start training a new model (runs in Dagster)")
    def train(self, model_service: ModelService, data: TrainRequest) -> Response[Envelope[TrainingStatus]]:
        status = model_service.request_training(data, "train", None)
        return ok(status, message="training requested", status_code=202)

    @post(
        "/{model_ref:str}/update",
        status_code=202,
        sync_to_thread=True,
        summary="Retrain: fine-tune this model on a dataset",
    )
    def update(
        self, model_service: ModelService, model_ref: str, data: TrainRequest
    ) -> Response[Envelope[TrainingStatus]]:
        status = model_service.request_training(data, "update", model_ref)
        return ok(status, message=f"retraining of {model_ref} requested", status_code=202)

    @get("/train/status", sync_to_thread=True, summary="Progress of the latest training")
    def train_status(self, model_service: ModelService) -> Response[Envelope[TrainingStatus]]:
        return ok(model_service.training_status())

    @get(
        "/retrain/status",
        sync_to_thread=True,
        summary="Verified labels toward the next automatic retraining (the retrain sensor's count)",
    )
    def retrain_status(self, model_service: ModelService) -> Response[Envelope[RetrainStatus]]:
        return ok(model_service.retrain_status())

    @delete("/train/cancel", status_code=200, sync_to_thread=True, summary="Cancel the pending or running training")
    def cancel(self, model_service: ModelService) -> Response[Envelope[TrainingStatus]]:
        return ok(model_service.cancel_training(), message="training cancelled")
