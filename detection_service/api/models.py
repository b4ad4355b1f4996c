from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post

from detection_service.api.responses import ApiError, in_thread, ok
from detection_service.services.models import ModelService
from schemas.envelope import Envelope
from schemas.models import DeployRequest, DeployResult, ModelInfo, TrainingStatus, TrainRequest


def _service(request: Request[Any, Any, Any]) -> ModelService:
    return request.app.state.model_service




class ModelController(Controller):
    path = "/api/models"
    tags = ["Models"]

    @get("/current", summary="The deployed model")
    async def current(self, request: Request[Any, Any, Any]) -> Response[Envelope[ModelInfo]]:
        model = await in_thread(_service(request).current)
        if model is None:
            raise ApiError(404, "NO_MODEL", "no model is deployed yet (train one, or run `aidoor bootstrap-model`)")
        return ok(model)

    @get("/versions", summary="Every registered model, newest first")
    async def versions(self, request: Request[Any, Any, Any]) -> Response[Envelope[list[ModelInfo]]]:
        return ok(await in_thread(_service(request).versions))

    @get("/{model_ref:str}/info", summary="One model with its evaluation (by model_id or numeric id)")
    async def info(self, request: Request[Any, Any, Any], model_ref: str) -> Response[Envelope[ModelInfo]]:
        return ok(await in_thread(_service(request).info, model_ref))

    @post("/{model_ref:str}/deploy", status_code=200,
          summary="Switch the running detector to this model (champion/challenger gate unless force)")
    async def deploy(
        self, request: Request[Any, Any, Any], model_ref: str, data: DeployRequest | None = None
    ) -> Response[Envelope[DeployResult]]:
        force = bool(data and data.force) or request.query_params.get("force", "").lower() in ("1", "true", "yes")
        result = await in_thread(_service(request).deploy, model_ref, force)
        return ok(result, message=f"{result.model.model_id} deployed")

    @post("/train", status_code=202, summary="Start training a new model (runs in Dagster)")
    async def train(self, request: Request[Any, Any, Any], data: TrainRequest) -> Response[Envelope[TrainingStatus]]:
        status = await in_thread(_service(request).request_training, data, "train", None)
        return ok(status, message="training requested", status_code=202)

    @post("/{model_ref:str}/update", status_code=202, summary="Retrain: fine-tune this model on a dataset")
    async def update(
        self, request: Request[Any, Any, Any], model_ref: str, data: TrainRequest
    ) -> Response[Envelope[TrainingStatus]]:
        status = await in_thread(_service(request).request_training, data, "update", model_ref)
        return ok(status, message=f"retraining of {model_ref} requested", status_code=202)

    @get("/train/status", summary="Progress of the latest training")
    async def train_status(self, request: Request[Any, Any, Any]) -> Response[Envelope[TrainingStatus]]:
        return ok(await in_thread(_service(request).training_status))

    @delete("/train/cancel", status_code=200, summary="Cancel the pending or running training")
    async def cancel(self, request: Request[Any, Any, Any]) -> Response[Envelope[TrainingStatus]]:
        return ok(await in_thread(_service(request).cancel_training), message="training cancelled")
