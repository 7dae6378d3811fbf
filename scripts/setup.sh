#!/usr/bin/env bash
# Creates the virtualenv (.venv, or $VENV) and installs the project with its test tools.
# Safe to re-run. pip is never asked to build dlib from source: scripts/dlib-shim (a `dlib`
# distribution that only depends on the prebuilt dlib-bin) goes in first, so face-recognition's
# requirement `dlib` is already satisfied when the project's dependencies are resolved.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
pip install -q --upgrade "pip>=23" "setuptools<81" wheel
# Built from a temporary copy so no build/ or egg-info is left in scripts/dlib-shim.
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
cp scripts/dlib-shim/pyproject.toml "$shim/"
pip install -q "$shim"
# --only-binary dlib: should the shim ever be missing, fail at once instead of compiling dlib.
pip install -q --only-binary dlib -e ".[test]"
# Fallback faces for clones without ../shared/data: the face_recognition sdist ships test photos.
VENV="$VENV" bash scripts/fetch_fallback_faces.sh
"$VENV/bin/python" -c "import face_recognition, dlib, cv2, serial, transitions, sqlalchemy; print('setup ok: face_recognition', face_recognition.__version__, 'dlib', dlib.__version__, 'opencv', cv2.__version__)"
