"""The control side of the realtime pipeline: what the service runs around ``pipeline/``.

``PipelineService`` (pipeline_service.py) assembles the parts and starts, stops and restarts them;
the demo source, the model loader, the live pipeline_settings, manual detection, the viewer broadcaster and
the WebSocket ingest each live in a module of their own. The HTTP handlers (``api/``) and the app
factory use this package; the loop itself (``pipeline/``) knows nothing of it."""
