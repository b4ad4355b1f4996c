"""The batch-job owner (detection_service/batch_jobs.py): typed parameters validated on submit,
and one state machine (pending -> running -> completed / failed / cancelled; a finished job is
frozen) whoever drives it: the API, the sensors, the assets, the training progress writer."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from detection_service.batch_jobs import (
    IN_PROCESS,
    BatchJobFinished,
    BatchJobNotFound,
    BatchJobs,
    training_id_of,
    validate,
)
from detection_service.errors import Invalid
from schemas.batch_jobs import (
    PARAMETER_TYPES,
    DatasetMaterialize,
    DatasetUpdate,
    ModelEvaluation,
    ModelRetrain,
    StorageCleanup,
    TrainParameters,
    encode_parameters,
    job_type_of,
)
from schemas.db import BatchJob, ModelTraining
from schemas.enums import BatchJobType, JobStatus


@pytest.fixture
def session_factory(migrated_database_url: str):
    from detection_service.database import make_engine, make_session_factory

    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def jobs(session_factory) -> BatchJobs:
    return BatchJobs(session_factory)


def _row(session_factory, job_id: int) -> BatchJob:
    with session_factory() as session:
        job = session.get(BatchJob, job_id)
        session.expunge(job)
        return job


# ---------------------------------------------------------------------- typed parameters


def test_every_job_type_has_a_parameter_struct():
    assert set(PARAMETER_TYPES) == set(BatchJobType)
    assert BatchJobType.DATASET_MATERIALIZE.value == "dataset_materialize"
    for job_type, struct in PARAMETER_TYPES.items():
        assert struct.__struct_config__.tag == job_type.value
    assert job_type_of(ModelEvaluation(model_id="m")) is BatchJobType.MODEL_EVALUATION


@pytest.mark.parametrize(
    ("job_type", "parameters"),
    [
        (
            "dataset_update",
            {"source": "auto_collect", "dataset_id": "door", "auto_label": False, "since_version": None},
        ),
        (
            "dataset_update",
            {
                "source": "roboflow",
                "workspace": "w",
                "project_name": "p",
                "version": 6,
                "dataset_id": "p",
                "class_mapping": None,
            },
        ),
        (
            "dataset_update",
            {
                "source": "path",
                "path": "/x",
                "dataset_id": "x",
                "name": "x",
                "description": "d",
                "with_paths": [{"path": "/y", "dataset_id": "y"}],
                "train": {"profile": "tiny", "auto_deploy": True, "job_type": "train", "mix": ["y"]},
            },
        ),
        ("dataset_materialize", {"dataset_id": "d", "version": "1"}),
        ("dataset_materialize", {"dataset_id": "d", "version": "1", "train": {"profile": "tiny", "training_id": 3}}),
        (
            "model_retrain",
            {
                "dataset_id": "d",
                "version": "1",
                "training_id": 1,
                "base_model_id": None,
                "epochs": 3,
                "batch_size": None,
                "imgsz": None,
                "confidence_threshold": 0.5,
                "sensitivity": "high",
                "profile": "tiny",
                "device": "cuda:0",
                "auto_deploy": False,
                "force_deploy": False,
            },
        ),
        ("model_evaluation", {"model_id": "m"}),
        ("storage_cleanup", {}),
        ("log_archive", {}),
    ],
)
def test_stored_parameters_keep_their_shape(job_type, parameters):
    """The row's JSON is the Struct's fields without the tag: what was given, no more, no less."""
    typed = validate(job_type, parameters)
    assert isinstance(typed, PARAMETER_TYPES[BatchJobType(job_type)])
    assert encode_parameters(typed) == parameters


@pytest.mark.parametrize(
    ("job_type", "parameters", "says"),
    [
        ("nightly_magic", {}, "job_type"),
        ("model_evaluation", {}, "model_id"),
        ("model_evaluation", {"model_id": 7}, "Expected `str`"),
        ("model_evaluation", {"model_id": "m", "force": True}, "unknown field"),
        ("model_evaluation", {"model_id": "m", "job_type": "model_retrain"}, "job_type"),
        ("dataset_update", {"source": "ftp", "dataset_id": "d"}, "source"),
        ("dataset_update", {"source": "roboflow", "dataset_id": "d"}, "needs project_name, version"),
        ("dataset_update", {"source": "auto_collect", "dataset_id": "d", "path": "/etc"}, "does not take path"),
        ("dataset_update", {"source": "path", "dataset_id": "d"}, "needs path"),
        ("dataset_materialize", {"dataset_id": "d", "version": "1", "train": {"epochs": "many"}}, "train.epochs"),
        ("dataset_materialize", {"dataset_id": "d", "version": "1", "train": {"lr": 0.1}}, "unknown field"),
        ("dataset_materialize", {"dataset_id": "d", "version": "1", "train": {"device": "gpu"}}, "train.device"),
    ],
)
def test_bad_parameters_are_a_domain_error(jobs: BatchJobs, session_factory, job_type, parameters, says):
    with pytest.raises(Invalid, match=says) as raised:
        validate(job_type, parameters)
    assert raised.value.code == "INVALID_JOB"
    with session_factory() as session:
        assert not session.scalar(sa.select(sa.func.count(BatchJob.id)))


def test_the_api_service_validates_on_submit(session_factory):
    from detection_service.services.job_queue import JobService

    service = JobService(session_factory)
    with pytest.raises(Invalid):
        service.submit("dataset_update", "bad", {"source": "roboflow"})
    with pytest.raises(Invalid):
        service.submit("no_such_type", "bad", {})
    job = service.submit(BatchJobType.MODEL_EVALUATION, "evaluate m", {"model_id": "m"}, priority=4)
    assert (job.job_type, job.status, job.priority) == ("model_evaluation", "pending", 4)
    assert job.parameters == {"model_id": "m"}
    assert service.list() == [job] and service.get(job.id) == job


def test_the_api_answers_bad_parameters_and_unknown_or_finished_jobs_with_statuses():
    from detection_service.api.responses import status_of

    with pytest.raises(Invalid) as raised:
        validate("no_such_type", {})
    assert status_of(raised.value) == 400
    assert status_of(BatchJobNotFound("x")) == 404 and status_of(BatchJobFinished("x")) == 409


def test_submit_checks_the_types_of_a_struct_built_by_hand(jobs: BatchJobs):
    with pytest.raises(Invalid, match="model_id"):
        jobs.submit(ModelEvaluation(model_id=3), "x")  # type: ignore[arg-type]  # msgspec does not check at init


# ---------------------------------------------------------------------- state machine


def test_a_job_runs_through_its_states(jobs: BatchJobs, session_factory):
    view = jobs.submit(ModelEvaluation(model_id="m"), "evaluate m " + "x" * 200, priority=4)
    assert view.status == "pending" and len(view.job_name) == 100
    assert jobs.progress(view.id, 10, "queued")  # a pending job may report progress
    params = jobs.start(view.id, "run-1", "evaluating")
    assert params == ModelEvaluation(model_id="m")
    row = _row(session_factory, view.id)
    assert (row.status, row.dagster_run_id, row.current_step) == ("running", "run-1", "evaluating")
    started_at = row.started_at
    assert started_at is not None
    assert jobs.progress(view.id, 150, "half way")
    assert _row(session_factory, view.id).progress_percentage == 100  # clamped
    assert jobs.progress(view.id, 50, result={"partial": True})
    assert jobs.complete(view.id, {"ok": True})
    row = _row(session_factory, view.id)
    assert (row.status, row.progress_percentage, row.current_step) == ("completed", 100, "done")
    assert row.result == {"ok": True}
    assert row.completed_at is not None and row.started_at == started_at


@pytest.mark.parametrize("close", ["complete", "fail", "cancel", "finish"])
def test_a_finished_job_is_frozen(jobs: BatchJobs, session_factory, close):
    """Completing a cancelled job (or any write after the end) is refused the same way: False /
    None, and the row is unchanged."""
    job_id = jobs.submit(ModelEvaluation(model_id="m"), "x").id
    assert jobs.start(job_id, "run-1")
    assert jobs.cancel(job_id, "cancelled by request")
    before = _row(session_factory, job_id)
    assert before.status == "cancelled" and before.error_message == "cancelled by request"
    assert before.current_step == "cancelled"
    refused = {
        "complete": lambda: jobs.complete(job_id, {"late": True}),
        "fail": lambda: jobs.fail(job_id, "late failure"),
        "cancel": lambda: jobs.cancel(job_id),
        "finish": lambda: jobs.finish(job_id, JobStatus.COMPLETED, None, "run-2"),
    }[close]()
    assert refused is False
    assert jobs.start(job_id, "run-2") is None
    assert jobs.progress(job_id, 50, "late") is False
    after = _row(session_factory, job_id)
    assert (
        after.status,
        after.result,
        after.error_message,
        after.current_step,
        after.dagster_run_id,
        after.completed_at,
    ) == (before.status, before.result, before.error_message, before.current_step, "run-1", before.completed_at)


def test_unknown_jobs_are_refused_too(jobs: BatchJobs):
    assert jobs.start(404, "run") is None
    assert jobs.complete(404) is False and jobs.fail(404, "x") is False and jobs.cancel(404) is False
    assert jobs.progress(404, 1) is False and jobs.finish(404, JobStatus.FAILED) is False
    with pytest.raises(BatchJobNotFound):
        jobs.parameters(404)


def test_a_pending_job_may_end_without_starting(jobs: BatchJobs, session_factory):
    """Cancelled before it started; failed because no run can execute it; completed by the run
    status sensor when its run never claimed the row."""
    cancelled, failed, completed = (jobs.submit(ModelEvaluation(model_id=f"m{i}"), "x").id for i in range(3))
    assert jobs.cancel(cancelled) and jobs.fail(failed, "cannot run: no Dagster job")
    assert jobs.finish(completed, JobStatus.COMPLETED, None, "run-9")
    statuses = [_row(session_factory, i).status for i in (cancelled, failed, completed)]
    assert statuses == ["cancelled", "failed", "completed"]
    assert _row(session_factory, completed).dagster_run_id == "run-9"
    assert _row(session_factory, failed).error_message == "cannot run: no Dagster job"


def test_finish_closes_the_training_the_job_drives(jobs: BatchJobs, session_factory):
    from detection_service.services.job_queue import queue_dataset_materialize

    job_id = queue_dataset_materialize(session_factory, "d", "1", {"profile": "tiny", "epochs": 2})
    params = jobs.parameters(job_id)
    assert isinstance(params, DatasetMaterialize) and isinstance(params.train, TrainParameters)
    training_id = training_id_of(params)
    with session_factory() as session:
        training = session.get(ModelTraining, training_id)
        assert (training.status, training.epochs, training.job_type) == ("pending", 2, "train")
        assert BatchJobs.of_training(session, training_id).id == job_id
    assert jobs.finish(job_id, JobStatus.FAILED, "interrupted", "run-1")
    with session_factory() as session:
        training = session.get(ModelTraining, training_id)
        assert training.status == "failed" and training.error_message == "interrupted"
    assert not jobs.finish(job_id, JobStatus.COMPLETED)  # closed once


def test_waiting_for_a_run_skips_claimed_and_in_process_jobs(jobs: BatchJobs, session_factory):
    low = jobs.submit(ModelEvaluation(model_id="low"), "low", priority=8).id
    high = jobs.submit(ModelEvaluation(model_id="high"), "high", priority=1).id
    in_process = jobs.submit(ModelEvaluation(model_id="bootstrap"), "bootstrap").id
    claimed = jobs.submit(ModelEvaluation(model_id="claimed"), "claimed").id
    with session_factory.begin() as session:
        assert jobs.progress(in_process, step=IN_PROCESS, session=session)
    jobs.start(claimed, "run-1")
    with session_factory() as session:
        assert [job.id for job in BatchJobs.waiting_for_a_run(session)] == [high, low]
    assert jobs.active_count() == 4 and jobs.active_count([BatchJobType.DATASET_UPDATE]) == 0


def test_a_transition_joins_the_callers_transaction(jobs: BatchJobs, session_factory):
    job_id = jobs.submit(ModelEvaluation(model_id="m"), "x").id
    with pytest.raises(RuntimeError), session_factory.begin() as session:
        jobs.complete(job_id, {"ok": True}, session=session)
        raise RuntimeError("the caller's other write failed")
    assert _row(session_factory, job_id).status == "pending"  # rolled back with it


# ---------------------------------------------------------------------- the runner's bookkeeping


def test_running_starts_completes_and_fails(jobs: BatchJobs, session_factory):
    ok = jobs.submit(DatasetUpdate(source="auto_collect", dataset_id="d", auto_label=True), "ok").id
    with jobs.running(ok, "run-1", "collecting") as job:
        assert isinstance(job.parameters, DatasetUpdate) and job.parameters.dataset_id == "d"
        assert _row(session_factory, ok).current_step == "collecting"
        job.progress(40, "half")
    assert (_row(session_factory, ok).status, _row(session_factory, ok).current_step) == ("completed", "done")

    nothing = jobs.submit(ModelEvaluation(model_id="m"), "nothing").id
    with jobs.running(nothing, "run-2") as job:
        job.complete({"nothing_new": "no events"}, step="nothing new")
    row = _row(session_factory, nothing)
    assert (row.status, row.current_step, row.result) == ("completed", "nothing new", {"nothing_new": "no events"})

    broken = jobs.submit(ModelEvaluation(model_id="m"), "broken").id
    with pytest.raises(ValueError, match="boom"), jobs.running(broken, "run-3"):
        raise ValueError("boom")
    row = _row(session_factory, broken)
    assert (row.status, row.error_message) == ("failed", "ValueError: boom")

    with pytest.raises(BatchJobFinished, match="already failed"), jobs.running(broken, "run-4"):
        pass
    with pytest.raises(BatchJobNotFound), jobs.running(404, "run-5"):
        pass
    with jobs.running(None, "run-6") as job:  # work without a queued job: no bookkeeping
        assert job.parameters is None and not job.complete()


def test_training_progress_writes_through_the_owner(jobs: BatchJobs, session_factory):
    """ml/progress.py: its job writes obey the same state machine (a cancelled job stays cancelled)."""
    from detection_service.ml.progress import TrainingProgress

    job_id = jobs.submit(ModelRetrain(dataset_id="d", version="1", training_id=1), "train").id
    progress = TrainingProgress(session_factory, None, job_id)
    progress.started("run-1")
    row = _row(session_factory, job_id)
    assert (row.status, row.dagster_run_id, row.current_step) == ("running", "run-1", "training")
    progress.step("exporting", 80)
    row = _row(session_factory, job_id)
    assert (row.progress_percentage, row.current_step) == (80, "exporting")
    progress.finished(None, {}, 1.0, {"model_id": "m"})
    row = _row(session_factory, job_id)
    assert (row.status, row.progress_percentage, row.current_step, row.result) == (
        "running",
        90,
        "model registered",
        {"model_id": "m"},
    )
    jobs.cancel(job_id)
    progress.failed("too late")
    assert _row(session_factory, job_id).status == "cancelled"

    other = jobs.submit(ModelRetrain(dataset_id="d", version="1", training_id=2), "train").id
    TrainingProgress(session_factory, None, other).failed("stopped", cancelled=True)
    row = _row(session_factory, other)
    assert (row.status, row.error_message, row.current_step) == ("cancelled", "stopped", "cancelled")


def test_the_sensor_fails_a_job_it_cannot_run(jobs: BatchJobs, session_factory, settings):

    from orchestration.sensors import batch_job_sensor
    from tests.dagster_helpers import ephemeral_instance, tick

    with session_factory.begin() as session:  # rows from before the typed parameters, that no longer fit
        session.add(BatchJob(job_type="model_evaluation", job_name="old", parameters={"model": "m"}))
        session.add(BatchJob(job_type="nightly_magic", job_name="gone", parameters={}))
    cleanup = jobs.submit(StorageCleanup(), "cleanup").id  # every job type runs now: this one gets its run
    with ephemeral_instance() as instance:
        result, _ = tick(batch_job_sensor, settings, instance)
        assert [(r.job_name, r.run_key) for r in result.run_requests] == [
            ("storage_cleanup_job", f"batch-job-{cleanup}")
        ]
    with session_factory() as session:
        rows = session.scalars(sa.select(BatchJob).order_by(BatchJob.id)).all()
        assert [(r.status, (r.error_message or "").startswith("cannot run:")) for r in rows] == [
            ("failed", True),
            ("failed", True),
            ("pending", False),
        ]
