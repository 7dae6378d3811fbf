#!/usr/bin/env bash
# Creates .venv and installs the project with its test tools. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade "pip>=23" "setuptools<81" wheel
.venv/bin/python -m pip install -q -e ".[test]"
# face_recognition's metadata asks for the source build of dlib; dlib-bin (above) provides it.
.venv/bin/python -m pip install -q --no-deps "face-recognition==1.3.0"
# Fallback faces for clones without ../shared/data: the face_recognition sdist ships test photos.
bash scripts/fetch_fallback_faces.sh
.venv/bin/python -c "import face_recognition, cv2, serial, transitions, sqlalchemy; print('setup ok: face_recognition', face_recognition.__version__, 'opencv', cv2.__version__)"
