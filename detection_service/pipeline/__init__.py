"""The realtime pipeline: capture -> motion gate -> detector -> tracker -> events (docs/pipeline.md).

Import the submodules directly; this package imports nothing heavy so that ``configure_offline``
can run before Ultralytics is first imported.
"""
