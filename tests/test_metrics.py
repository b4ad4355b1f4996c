"""GET /metrics: Prometheus text that parses, outside the OpenAPI schema, whose counters move when
the pipeline handles frames and creates events."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detection_service import metrics
from tests.pipeline.conftest import ScriptedDetector, det, wait_until, write_video

pytestmark = pytest.mark.usefixtures("offline_dir")


def scrape(client) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_parse_and_follow_conventions(client):
    client.get("/api/system/status")
    samples = scrape(client)
    for name in (
        "aidoor_pipeline_fps",
        "aidoor_writer_queue_depth",
        "aidoor_writer_retries_total",
        "aidoor_alert_queue_depth",
        "aidoor_frames_processed_total",
        "aidoor_frames_dropped_total",
        "aidoor_inference_latency_seconds_count",
        "aidoor_frame_age_seconds_bucket",
        "aidoor_component_up",
    ):
        assert name in samples, name
    for status in ("pending", "running", "completed", "failed", "cancelled"):
        assert value(samples, "aidoor_batch_jobs", status=status) == 0
    # HTTP request latency by route template (Litestar's Prometheus middleware).
    paths = {dict(labels).get("path") for labels in samples["aidoor_http_request_duration_seconds_count"]}
    assert "/api/system/status" in paths
    assert "/metrics" not in paths
    # Counters end in _total, times are in seconds.
    response = client.get("/metrics")
    for line in response.text.splitlines():
        if line.startswith("# TYPE aidoor_") and line.endswith(" counter"):
            assert line.split()[2].endswith("_total") or line.split()[2] + "_total" in samples, line
    assert "/metrics" not in client.get("/schema/openapi.json").json()["paths"]


def test_counters_move_when_frames_run_and_events_are_created(client, tmp_path: Path):
    metrics.set_enabled(True)
    before = scrape(client)
    video = write_video(tmp_path / "door.avi", frames=45, fps=15, size=(160, 120))
    client.app.state.detector_holder.swap(ScriptedDetector(lambda i, t: [det(10, 10, 60, 100, "person", 0.9)]))
    assert client.put("/api/settings/camera", json={"source": str(video)}).status_code == 200

    def moved() -> bool:
        now = scrape(client)
        return (
            value(now, "aidoor_events_created_total", type="person")
            > value(before, "aidoor_events_created_total", type="person")
            and value(now, "aidoor_inference_latency_seconds_count")
            >= value(before, "aidoor_inference_latency_seconds_count") + 5
        )

    assert wait_until(moved, 10, interval=0.3)
    after = scrape(client)
    assert value(after, "aidoor_frames_processed_total") > value(before, "aidoor_frames_processed_total")
    assert value(after, "aidoor_frame_age_seconds_count") > value(before, "aidoor_frame_age_seconds_count")
    assert value(after, "aidoor_pipeline_fps") > 0
    assert value(after, "aidoor_component_up", component="camera") == 1.0
    data = client.get("/api/system/performance").json()["data"]["current"]
    assert data["inference_ms_p50"] is not None and data["inferences_last_minute"] >= 5
    assert data["pipeline_fps"] > 0
    client.put("/api/settings/camera", json={"source": ""})


def test_disabled_metrics_observe_nothing():
    metrics.set_enabled(False)
    try:
        count = metrics.FRAMES_PROCESSED._value.get()
        metrics.observe_frame(3)
        metrics.observe_inference(0.01, 0.02)
        assert metrics.FRAMES_PROCESSED._value.get() == count
    finally:
        metrics.set_enabled(True)
    metrics.observe_frame(2)
    assert metrics.FRAMES_PROCESSED._value.get() == count + 1
