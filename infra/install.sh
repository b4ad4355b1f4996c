#!/usr/bin/env bash
# Creates .venv and installs the project with its pinned dependency set, offline-safe.
# Idempotent; `make` only calls it when pyproject.toml is newer than the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-.venv}"
HEADLESS_PIN="$(grep -o '"opencv-python-headless==[^"]*"' pyproject.toml | tr -d '"')"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

echo "==> installing ai-door-system and its pinned dependencies (first time: a few minutes)"
$PIP install --quiet --disable-pip-version-check -e '.[test,lint]' 2> >(grep -v 'is ignored: it is neither' >&2)

# Ultralytics requires opencv-python (GUI build) while we ship opencv-python-headless; both own
# cv2/, so removing one breaks the other. Remove the GUI build, then lay the headless one back.
if $PIP show opencv-python >/dev/null 2>&1; then
  echo "==> replacing opencv-python with $HEADLESS_PIN"
  $PIP uninstall --quiet -y opencv-python
  $PIP install --quiet --force-reinstall --no-deps "$HEADLESS_PIN" 2> >(grep -v 'is ignored: it is neither' >&2)
fi
# openvino-telemetry phones home and writes ~/intel; triton (0.9 GB) is only for CUDA kernels.
for unwanted in openvino-telemetry triton; do
  if $PIP show "$unwanted" >/dev/null 2>&1; then $PIP uninstall --quiet -y "$unwanted"; fi
done

# Import check with Ultralytics kept offline and its settings inside the data dir.
mkdir -p "${AIDOOR_DATA_DIR:-./data}/ultralytics"
YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_CONFIG_DIR="${AIDOOR_DATA_DIR:-./data}/ultralytics" "$VENV/bin/python" - <<'PY'
import cv2, torch, ultralytics, dagster, litestar, minio, telegram, roboflow  # noqa: F401
info = cv2.getBuildInformation()
gui = [line for line in info.splitlines() if line.strip().startswith("GUI:")]
assert not gui or "NONE" in gui[0].upper(), f"cv2 is not the headless build: {gui}"
print(f"==> ok: torch {torch.__version__}, ultralytics {ultralytics.__version__}, cv2 {cv2.__version__} (headless), dagster {dagster.__version__}")
PY
touch "$VENV/.aidoor-installed"
