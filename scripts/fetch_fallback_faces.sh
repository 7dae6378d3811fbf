#!/usr/bin/env bash
# Only when ../shared/data/faces is absent: take the two people's test photos that the
# face_recognition source distribution carries (a registry package, fetched at set-up time,
# never at run time) into .cache/faces/<person>/, the layout of ../shared/data/faces.
set -euo pipefail
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."
data=${CABINET_DATA:-../shared/data}
if [ -d "$data/faces" ] || [ -f .cache/faces/.done ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$tmp" "face-recognition==1.3.0"
tar -xzf "$tmp"/face_recognition-1.3.0.tar.gz -C "$tmp"
src="$tmp/face_recognition-1.3.0/tests/test_images"
mkdir -p .cache/faces/obama .cache/faces/biden
cp "$src/obama.jpg" .cache/faces/obama/01_obama.jpg
cp "$src/obama2.jpg" .cache/faces/obama/02_obama2.jpg
cp "$src/obama3.jpg" .cache/faces/obama/03_obama3.jpg
cp "$src/biden.jpg" .cache/faces/biden/01_biden.jpg
touch .cache/faces/.done
echo "fallback faces: ../shared/data/faces not found; using face_recognition's test photos in .cache/faces"
