"""Keep Ultralytics offline and inside our data directory.

Call ``configure_offline(data_dir)`` before the first ``import ultralytics`` in the process:
Ultralytics reads ``YOLO_OFFLINE``, ``YOLO_AUTOINSTALL`` and ``YOLO_CONFIG_DIR`` once, at import
time (``ultralytics.utils``: ``ONLINE = is_online()``, ``AUTOINSTALL = env_bool(...)``,
``USER_CONFIG_DIR = get_user_config_dir()``). After import it is too late to move the config dir;
a later call still updates the settings and puts the fonts where that import looks for them.

What would otherwise reach the network (checked against ultralytics 8.4.190):
- ``check_font('Arial.ttf')`` in every dataset check downloads the font unless it is found in
  ``USER_CONFIG_DIR``: we copy matplotlib's DejaVuSans.ttf there under both names it asks for.
- ``check_requirements`` pip-installs missing packages unless ``YOLO_AUTOINSTALL`` is false.
- ``is_online()`` (pip update check, analytics, Sentry) short-circuits on ``YOLO_OFFLINE``.
- ``check_amp`` downloads yolo26n.pt: callers must train with ``amp=False`` (training.py does).
- Analytics / platform / third-party logger callbacks: ``sync=False``, integrations off, no API key.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import threading
from pathlib import Path

_LOCK = threading.Lock()
_configured: Path | None = None
# Font names ultralytics' check_font asks for: Arial.ttf for ASCII class names, Arial.Unicode.ttf
# for the rest (data/utils.py check_det_dataset, utils/plotting.py).
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
# Integrations that add trainer callbacks when enabled in settings; none may run here.
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")


def _bundled_font() -> Path:
    """matplotlib's DejaVuSans.ttf, found without importing matplotlib (which would build a font cache)."""
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        font = Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    raise FileNotFoundError("matplotlib's DejaVuSans.ttf not found; Ultralytics would download Arial.ttf")


def _install_fonts(font_dir: Path) -> None:
    font_dir.mkdir(parents=True, exist_ok=True)
    source = None
    for name in FONT_NAMES:
        target = font_dir / name
        if not target.is_file() or target.stat().st_size == 0:
            source = source or _bundled_font()
            tmp = target.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic: a concurrent check_font never sees half a file


def configure_offline(data_dir: Path) -> Path:
    """Point Ultralytics (and torch/matplotlib/onnxruntime caches) at ``data_dir``; no network.

    Returns the YOLO config dir (``<data_dir>/ultralytics``). Idempotent; safe to call again with
    the same or another data dir (the config dir stays the one of the first import).
    """
    data_dir = Path(data_dir).resolve()
    config_dir = data_dir / "ultralytics"
    with _LOCK:
        env = {
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "0",
            "MPLCONFIGDIR": str(data_dir / "cache" / "matplotlib"),
            "XDG_CACHE_HOME": str(data_dir / "cache"),
            "TORCHINDUCTOR_CACHE_DIR": str(data_dir / "cache" / "torchinductor"),
        }
        imported = "ultralytics" in sys.modules
        if not imported:
            env["YOLO_CONFIG_DIR"] = str(config_dir)
        for key, value in env.items():
            os.environ[key] = value
            if key.endswith(("DIR", "_HOME")):
                Path(value).mkdir(parents=True, exist_ok=True)
        # Never stream to the Ultralytics platform, whatever the caller's environment says.
        os.environ.pop("ULTRALYTICS_API_KEY", None)

        if imported:
            from ultralytics.utils import USER_CONFIG_DIR

            font_dir = Path(USER_CONFIG_DIR)
        else:
            font_dir = config_dir / "Ultralytics"  # what get_user_config_dir() will return
        _install_fonts(font_dir)

        from ultralytics import settings  # the import now sees the variables above

        wanted = {
            "datasets_dir": str(data_dir / "datasets"),
            "weights_dir": str(data_dir / "weights"),
            "runs_dir": str(data_dir / "runs"),
            "sync": False,
            "api_key": "",
            **dict.fromkeys(_INTEGRATIONS, False),
            "vscode_msg": False,
            "openvino_msg": False,
        }
        if any(settings.get(k) != v for k, v in wanted.items()):  # avoid rewriting settings.json each call
            settings.update(wanted)
        global _configured
        _configured = data_dir
        return config_dir


def configured_data_dir() -> Path | None:
    """The data dir of the last configure_offline() call in this process, or None."""
    return _configured
