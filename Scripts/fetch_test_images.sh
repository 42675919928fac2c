#!/usr/bin/env bash
# Fetches real photographs for Tests/HasteTests/Preprocess: sample images shipped in the PyPI wheel
# scikit-image==0.24.0, unpacked into .cache/test-images/ (never committed). A no-op when cached. Never fails:
# offline it warns, and the photo tests skip (the synthetic-image tests still run).
set -uo pipefail
cd "$(dirname "$0")/.."

dir=.cache/test-images
files="chelsea.png coffee.png astronaut.png camera.png rocket.jpg hubble_deep_field.jpg"
[ -f "$dir/done" ] && exit 0
warn() { echo "warning: $* — the preprocess photo tests will be skipped" >&2; exit 0; }
pip=""
for p in "${PIP:-}" pip3 pip "python3 -m pip"; do
    [ -n "$p" ] && $p --version >/dev/null 2>&1 && { pip=$p; break; }
done
[ -n "$pip" ] || warn "no pip found to fetch scikit-image==0.24.0"
mkdir -p "$dir/wheel"
echo "fetching scikit-image==0.24.0 from PyPI (once) into $dir" >&2
timeout 600 $pip download --no-deps --quiet --disable-pip-version-check --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 -d "$dir/wheel" scikit-image==0.24.0 >&2 || warn "pip download scikit-image failed (offline?)"
wheel=$(ls "$dir"/wheel/scikit_image-0.24.0-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || warn "no wheel downloaded"
python3 - "$wheel" "$dir" $files <<'PY' || warn "could not unpack the sample images from $wheel"
import sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with open(f"{out}/{n}", "wb") as f:
            f.write(z.read(f"skimage/data/{n}"))
PY
rm -rf "$dir/wheel"
touch "$dir/done"
