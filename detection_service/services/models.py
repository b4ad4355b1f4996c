"""Model registry, training requests and deployment, as the API and the CLI see them."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from detection_service.batch_jobs import BatchJobs
from detection_service.dagster_client import DagsterClient, DagsterUnavailable
from detection_service.datasets.evaluation_set import EVALUATION_SET_ID, NoEvaluationSet, latest_evaluation_set
from detection_service.errors import Conflict, DomainError, GateFailed, Invalid, NotFound
from detection_service.ml import registry
from detection_service.ml.classes import MODEL_CLASSES
from detection_service.services.job_queue import JobService
from detection_service.services.retrain_progress import new_verified_labels
from detection_service.services.settings import SettingsService
from detection_service.storage import InvalidKey, ObjectStore, keys
from schemas.batch_jobs import ModelRetrain
from schemas.db import Dataset, Model, ModelTraining, utcnow
from schemas.enums import BatchJobType, JobStatus
from schemas.models import DeployResult, ModelInfo, RetrainStatus, TrainingStatus, TrainRequest

log = logging.getLogger(__name__)

# Called with (model_id, local weights path) to make the running detector use a model.
DeployHook = Callable[[str, Path], None]
ACTIVE = (JobStatus.PENDING, JobStatus.RUNNING)


# Any error the model registry / training / deploy raises (NotFound, Invalid, Conflict, GateFailed ...).
ModelError = DomainError


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def model_info(row: Model) -> ModelInfo:
    metrics = row.metrics or {}
    dataset = metrics.get("dataset") or {}
    params = metrics.get("training_params")
    per_class = metrics.get("per_class")
    return ModelInfo(
        id=row.id,
        model_id=row.model_id,
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        is_current=bool(row.is_current),
        accuracy=_float(row.accuracy),
        map50_95=_float(metrics.get("map50_95")),
        precision=_float(metrics.get("precision")),
        recall=_float(metrics.get("recall")),
        inference_time=f"{row.inference_time}ms" if row.inference_time is not None else None,
        inference_ms=_float(metrics.get("inference_ms")),
        model_size=row.model_size,
        dataset_id=dataset.get("dataset_id"),
        dataset_version=dataset.get("version"),
        data_yaml_path=(
            f"{keys.dataset_version_root(dataset['dataset_id'], dataset['version'])}data.yaml"
            if dataset.get("dataset_id") and dataset.get("version")
            else None
        ),
        training_date=row.created_at,
        training_params=(
            {
                k: params.get(k)
                for k in ("epochs", "batch_size", "imgsz", "confidence_threshold", "sensitivity", "profile", "model")
            }
            if params
            else None
        ),
        per_class=[
            dict(zip(("class", "images", "instances", "precision", "recall", "map50", "map50_95"), r, strict=False))
            for r in per_class
        ]
        if per_class
        else None,
        class_thresholds=metrics.get("class_thresholds"),
        gate=metrics.get("gate"),
        weights_path=row.model_path,
        onnx_path=row.weights_onnx_path,
    )


class ModelService:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        jobs: JobService,
        dagster: DagsterClient,
        cache_dir: Path,
        deploy_hook: DeployHook | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._store = store
        self._jobs = jobs
        self._dagster = dagster
        self._cache_dir = cache_dir
        self.deploy_hook = deploy_hook
        self._deploy_lock = threading.Lock()
        self.loaded_model_id: str | None = None

    # ------------------------------------------------------------------ registry

    def _find(self, session: Session, ref: str | int) -> Model:
        query = sa.select(Model).where(Model.model_id == str(ref))
        row = session.scalar(query)
        if row is None and str(ref).isascii() and str(ref).isdigit():  # not '¹': isdigit() alone takes it
            row = session.get(Model, int(ref))
        if row is None:
            raise NotFound(f"model {ref!r} not found")
        return row

    def current(self) -> ModelInfo | None:
        with self._session_factory() as session:
            row = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
            return model_info(row) if row else None

    def versions(self) -> list[ModelInfo]:
        with self._session_factory() as session:
            return [model_info(r) for r in session.scalars(sa.select(Model).order_by(Model.id.desc()))]

    def info(self, ref: str | int) -> ModelInfo:
        with self._session_factory() as session:
            return model_info(self._find(session, ref))

    def weights_path(self, ref: str | int) -> tuple[str, Path]:
        """(model_id, local .pt path), downloading the weights from the store if needed."""
        with self._session_factory() as session:
            row = self._find(session, ref)
            model_id, key = row.model_id, row.model_path
        return model_id, registry.fetch_model(self._store, model_id, key, self._cache_dir)

    def pull(self, ref: str, destination: Path) -> Path:
        if ref == "current":
            current = self.current()
            if current is None:
                raise NotFound("no model is deployed")
            ref = current.model_id
        _, weights = self.weights_path(ref)
        destination = Path(destination)
        if weights.is_dir():  # an inference-only export folder
            if destination.is_dir():
                destination = destination / weights.name
            shutil.copytree(weights, destination, ignore=shutil.ignore_patterns(".complete"))
            return destination
        if destination.is_dir():
            destination = destination / f"{ref}.pt"
        shutil.copyfile(weights, destination)
        return destination

    def register_file(self, weights: Path, name: str | None = None, evaluate: bool = True) -> ModelInfo:
        """Register an Ultralytics detection model trained elsewhere: a ``.pt`` (e.g. yolo11n.pt) or
        an inference-only ``*_openvino_model`` export folder. Its classes map onto ours by name
        (person -> person; a class with no counterpart is reported as unclassified). With
        ``evaluate``, a ``model_evaluation`` batch job evaluates it on the fixed evaluation set and
        gates it against the champion (in Dagster); the job id is in ``metrics.evaluation_job_id``."""
        from ultralytics import YOLO  # configure_offline() ran at start-up

        from detection_service.ml.evaluation import ModelFormatError, class_mapping_report, model_kind

        weights = Path(weights)
        if not weights.exists():
            raise Invalid(f"{weights} does not exist")
        try:
            kind = model_kind(weights)
        except ModelFormatError as exc:
            raise Invalid(str(exc)) from None
        try:
            names = dict(YOLO(str(weights), task="detect").names)
        except Exception as exc:
            raise Invalid(f"{weights} is not an Ultralytics detection model: {exc}") from None
        mapping = class_mapping_report(names)
        if not mapping["mapped"]:
            raise Invalid(
                f"none of the {len(names)} classes of {weights.name} maps onto ours ({', '.join(MODEL_CLASSES)})",
                {"classes": list(names.values())[:100]},
                code="NO_KNOWN_CLASSES",
            )
        metrics = {
            "classes": list(names.values()),
            "class_mapping": mapping,
            "source": "registered file",
            "source_file": weights.name,
            "format": kind,
        }
        if kind == "openvino":
            row = registry.register_model_folder(
                self._session_factory, self._store, weights, model_name=name or weights.name, metrics=metrics
            )
        else:
            row = registry.register_model(
                self._session_factory,
                self._store,
                weights,
                model_name=name or weights.stem,
                metrics=metrics,
                inference_ms=None,
                created_by="cli",
            )
        if evaluate:
            job = self._jobs.submit(
                BatchJobType.MODEL_EVALUATION,
                f"evaluate registered {row.model_id}",
                {"model_id": row.model_id},
                priority=4,
            )
            with self._session_factory.begin() as session:
                stored = self._find(session, row.model_id)
                stored.metrics = {**(stored.metrics or {}), "evaluation_job_id": job.id}
        return self.info(row.model_id)

    # ------------------------------------------------------------------ training

    def _dataset(self, session: Session, ref: str) -> Dataset:
        row = session.scalar(sa.select(Dataset).where(Dataset.dataset_id == ref))
        if row is None and ref.isascii() and ref.isdigit():
            row = session.get(Dataset, int(ref))
        if row is None:
            raise NotFound(f"dataset {ref!r} not found")
        return row

    def request_training(
        self, request: TrainRequest, job_type: str = "train", base_model: str | None = None
    ) -> TrainingStatus:
        # No device asked for: the training settings' device, fixed now with the job.
        device = request.device or SettingsService(self._session_factory).get("training").device
        with self._session_factory.begin() as session:
            active = session.scalar(sa.select(ModelTraining).where(ModelTraining.status.in_(ACTIVE)))
            if active is not None:
                raise Conflict(
                    f"training {active.id} is {active.status}; cancel it first",
                    {"training_id": active.id},
                    code="TRAINING_IN_PROGRESS",
                )
            dataset = self._dataset(session, request.dataset_id)
            version = request.version or dataset.version
            try:  # no version yet (a new dataset) or a version no key can hold: not stored either way
                stored = bool(version) and self._store.exists(
                    keys.dataset_version_root(dataset.dataset_id, version) + "data.yaml"
                )
            except InvalidKey:
                stored = False
            if not stored:
                raise Invalid(
                    f"dataset {dataset.dataset_id} has no stored version {version!r}", code="DATASET_NOT_READY"
                )
            base = self._find(session, base_model).model_id if base_model else None
            training = ModelTraining(
                dataset_id=dataset.id,
                job_name=f"{job_type} on {dataset.dataset_id} {version}"[:100],
                job_type=job_type,
                status=JobStatus.PENDING,
                epochs=request.epochs or 0,
                batch_size=request.batch_size or 0,
                confidence_threshold=request.confidence_threshold,
                sensitivity=request.sensitivity,
            )
            session.add(training)
            session.flush()
            params = ModelRetrain(
                **{
                    **msgspec.structs.asdict(request),
                    "dataset_id": dataset.dataset_id,
                    "version": version,
                    "training_id": training.id,
                    "base_model_id": base,
                    "device": device,
                }
            )
            self._jobs.submit(params, training.job_name, priority=3, session=session)
            training_id = training.id
        return self.training_status(training_id)

    def retrain_status(self) -> RetrainStatus:
        """The verified labels toward the next automatic retraining: the retrain sensor's count."""
        labels = new_verified_labels(self._session_factory)
        training = SettingsService(self._session_factory).get("training")
        return RetrainStatus(
            new_verified_labels=labels.count,
            retrain_min_new_labels=training.retrain_min_new_labels,
            auto_retrain=training.auto_retrain,
            since=labels.since,
            queued=labels.queued,
        )

    def training_status(self, training_id: int | None = None) -> TrainingStatus:
        with self._session_factory() as session:
            query = sa.select(ModelTraining).order_by(ModelTraining.id.desc()).limit(1)
            if training_id is not None:
                query = sa.select(ModelTraining).where(ModelTraining.id == training_id)
            row = session.scalar(query)
            if row is None:
                raise NotFound("no training has been requested yet")
            job = BatchJobs.of_training(session, row.id)
            return TrainingStatus(
                id=row.id,
                job_name=row.job_name,
                job_type=row.job_type,
                status=row.status,
                dataset_id=row.dataset.dataset_id if row.dataset else None,
                model_id=row.model.model_id if row.model else None,
                epochs=row.epochs,
                current_epoch=row.current_epoch,
                progress_percentage=row.progress_percentage,
                training_loss=_float(row.training_loss),
                final_accuracy=_float(row.final_accuracy),
                training_time=row.training_time,
                error_message=row.error_message,
                dagster_run_id=row.dagster_run_id or (job.dagster_run_id if job else None),
                batch_job_id=job.id if job else None,
                current_step=job.current_step if job else None,
                created_at=row.created_at,
                started_at=row.started_at,
                completed_at=row.completed_at,
                last_epoch=row.metrics if row.status == JobStatus.RUNNING else None,
            )

    def cancel_training(self) -> TrainingStatus:
        run_id = None
        with self._session_factory.begin() as session:
            row = session.scalar(
                sa.select(ModelTraining).where(ModelTraining.status.in_(ACTIVE)).order_by(ModelTraining.id.desc())
            )
            if row is None:
                raise Conflict("no training is pending or running", code="NO_ACTIVE_TRAINING")
            # The training loop polls this status between batches and stops within seconds.
            row.status, row.completed_at, row.error_message = JobStatus.CANCELLED, utcnow(), "cancelled by request"
            job = BatchJobs.of_training(session, row.id)
            if job is not None:
                self._jobs.cancel(job.id, session=session)
            run_id = row.dagster_run_id or (job.dagster_run_id if job else None)
            training_id = row.id
        if run_id:
            try:
                self._dagster.terminate_run(run_id)
            except DagsterUnavailable as exc:
                log.warning("could not terminate Dagster run %s (the training stops itself): %s", run_id, exc)
        return self.training_status(training_id)

    # ------------------------------------------------------------------ deploy

    def deploy(self, ref: str | int, force: bool = False) -> DeployResult:
        with self._deploy_lock:
            with self._session_factory() as session:
                candidate = self._find(session, ref)
                champion = session.scalar(sa.select(Model).where(Model.is_current.is_(True)))
                candidate_pk, candidate_id = candidate.id, candidate.model_id
                champion_id = champion.model_id if champion else None
            verdict = None
            if champion_id and champion_id != candidate_id:
                verdict = self._gate(candidate_id, champion_id)
                if not verdict["passed"] and not force:
                    raise GateFailed(
                        f"{candidate_id} does not beat {champion_id}; pass force=true to deploy anyway", verdict
                    )
            model_id, weights = self.weights_path(candidate_id)
            reloaded = False
            if self.deploy_hook is not None:
                # Load first, switch the record after: a model that fails to load is never "current".
                self.deploy_hook(model_id, weights)
                reloaded = True
            registry.set_current_model(self._session_factory, candidate_pk)
            self.loaded_model_id = model_id
            return DeployResult(
                model=self.info(candidate_id),
                previous_model_id=champion_id,
                forced=bool(force and verdict and not verdict["passed"]),
                gate=verdict,
                detector_reloaded=reloaded,
            )

    def _gate(self, candidate_id: str, champion_id: str) -> dict[str, Any]:
        """Compare both models on the latest fixed evaluation set (``ml.gating.run_gate``; stored
        evaluations are reused, so this is quick when Dagster already evaluated them)."""
        from detection_service.ml.gating import run_gate

        with self._session_factory() as session:
            stored = (self._find(session, candidate_id).metrics or {}).get("gate")
        latest = latest_evaluation_set(self._session_factory)
        if (
            stored
            and stored.get("champion_id") == champion_id
            and latest is not None
            and stored.get("split") == f"{EVALUATION_SET_ID}@{latest[0]}"
        ):
            return stored
        collected = SettingsService(self._session_factory).get("training").auto_collect_dataset_id
        try:
            outcome = run_gate(
                self._session_factory,
                self._store,
                self._cache_dir,
                candidate_id,
                champion_id=champion_id,
                collected_dataset_id=collected,
            )
        except NoEvaluationSet as exc:
            raise Conflict(f"cannot compare the models: {exc}", code="NO_EVALUATION_SET") from None
        return msgspec.to_builtins(outcome.verdict)

    def sync_with_database(self) -> str | None:
        """Load the model marked current if the detector runs another one (a Dagster run may have
        deployed it). Returns the newly loaded model id."""
        current = self.current()
        if current is None or current.model_id == self.loaded_model_id or self.deploy_hook is None:
            return None
        with self._deploy_lock:
            if current.model_id == self.loaded_model_id:  # an API deploy won the race
                return None
            model_id, weights = self.weights_path(current.model_id)
            self.deploy_hook(model_id, weights)
            self.loaded_model_id = model_id
        log.info("loaded model %s (deployed outside this process)", model_id)
        return model_id
