"""``POST /api/detections``: the deployed model on one uploaded image, optionally one event.

A recorded upload takes the pipeline's own path for a new event (``pipeline.events.record_event``:
row, alerts and ``EventCreated`` together); only its capture is stored inside the transaction,
so a failed upload leaves no row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from detection_service.bus import EventBus
from detection_service.errors import Failed, Unavailable
from detection_service.ml.training import min_confidence
from detection_service.notifications.queue import QueueConfig
from detection_service.pipeline.detector import (
    UNCLASSIFIED,
    Detection,
    DetectorError,
    DetectorHolder,
    classify_detections,
)
from detection_service.pipeline.events import bbox_json, record_event
from detection_service.realtime.model_loader import ModelLoader
from detection_service.storage import ObjectStore
from detection_service.storage.keys import event_image_key
from schemas.db import DetectionEvent, EventImage
from schemas.detection import BBox, DetectedObject, ManualDetection
from schemas.settings import DetectionSettings


class ManualDetector:
    def __init__(
        self,
        *,
        holder: DetectorHolder,
        models: ModelLoader,
        detection: Callable[[], DetectionSettings],
        sensitivity: Callable[[], str],
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        bus: EventBus,
        alerts: QueueConfig,
    ) -> None:
        self.holder = holder
        self.models = models
        self.detection = detection  # the pipeline's current detection settings
        self.sensitivity = sensitivity  # the current setting
        self.session_factory = session_factory
        self.store = store
        self.bus = bus
        self.alerts = alerts

    def detect(self, image: np.ndarray, record: bool = False) -> ManualDetection:
        detector = self.holder.get()
        if detector is None:
            reason = self.models.last_error
            if self.models.loading:
                raise Unavailable("the model is being loaded; try again in a few seconds", code="MODEL_LOADING")
            raise Unavailable(
                "no model is deployed: train and deploy one (POST /api/models/train, then "
                "POST /api/models/{id}/deploy) or run `aidoor bootstrap-model`"
                + (f"; last load error: {reason}" if reason else ""),
                code="NO_MODEL",
            )
        detection = self.detection()
        threshold = detection.confidence_threshold
        sensitivity = self.sensitivity()
        floor = min_confidence(threshold, sensitivity)
        try:
            raw = detector.detect(image, conf=floor)
        except DetectorError:
            detector = self.holder.get()  # swapped for a new model during the call: use that one
            if detector is None:
                raise Unavailable("the model was unloaded", code="NO_MODEL") from None
            raw = detector.detect(image, conf=floor)
        found = classify_detections(raw, threshold, sensitivity)
        height, width = image.shape[:2]
        result = ManualDetection(
            detections=[_detected(d) for d in found],
            count=len(found),
            width=width,
            height=height,
            model_id=detector.model_id,
            backend=detector.backend,
            imgsz=detector.imgsz,
            inference_ms=round(detector.last_inference_ms, 2),
            confidence_threshold=threshold,
            min_confidence=floor,
        )
        if record and found:
            result.event_id, result.image_key = self._record(
                image, found, detector.model_id, detector.last_inference_ms, detection
            )
        return result

    def _record(
        self,
        image: np.ndarray,
        found: list[Detection],
        model_id: str,
        inference_ms: float,
        detection: DetectionSettings,
    ) -> tuple[int, str]:
        """One closed event for an uploaded image: its best detection, the image as capture 1."""
        best = max(found, key=lambda d: (d.object_type != UNCLASSIFIED, d.confidence))
        height, width = image.shape[:2]
        box = bbox_json(best.xyxy, width, height)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, detection.jpeg_quality])
        if not ok:
            raise Failed("could not encode the image as JPEG", code="ENCODE_FAILED")
        jpeg = buf.tobytes()
        now = datetime.now(UTC)

        def store_capture(session: Session, row: DetectionEvent) -> None:
            key = event_image_key(row.id, now, 1)
            self.store.put_bytes(key, jpeg, "image/jpeg")
            row.image_path = key
            session.add(
                EventImage(
                    event_id=row.id,
                    image_path=key,
                    sequence_number=1,
                    compression_quality=detection.jpeg_quality,
                    captured_at=now,
                )
            )

        values = {
            "confidence_score": round(best.confidence, 4),
            "bbox_coordinates": json.dumps(box, separators=(",", ":")),
            "model_version": model_id,
            "processing_time": round(inference_ms),
            "detected_at": now,
            # A single upload is over at once; an open package would count as "present".
            "ended_at": now,
            "tracking_duration": 0,
            "created_by": "api",
        }
        event_id = record_event(
            self.session_factory,
            self.bus,
            self.alerts,
            object_type=best.object_type or UNCLASSIFIED,
            values=values,
            bbox=box,
            tracking_id=0,
            snapshot=jpeg,
            in_transaction=store_capture,
        )
        return event_id, event_image_key(event_id, now, 1)


def _detected(d: Detection) -> DetectedObject:
    return DetectedObject(
        bbox=BBox(x1=round(d.x1), y1=round(d.y1), x2=round(d.x2), y2=round(d.y2)),
        class_name=d.class_name,
        class_id=d.class_id,
        confidence=round(d.confidence, 4),
        type=d.object_type or UNCLASSIFIED,
    )
