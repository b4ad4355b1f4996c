"""Model training, evaluation and export shared by the Dagster assets and the detection service.

Import ``detection_service.ml.ultralytics_env.configure_offline`` and call it before anything
imports ultralytics; ``training`` imports ultralytics lazily for that reason.
"""

from detection_service.ml.classes import MODEL_CLASSES, map_class_name

__all__ = ["MODEL_CLASSES", "map_class_name"]
