#!/usr/bin/env bash
# Fetches CLIP's BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` (the file Hugging Face's CLIPTokenizer and
# open_clip's SimpleTokenizer both build their vocabulary from; issue #16) from the PyPI wheel open_clip_torch==3.3.0,
# cached in .cache/clip/ (never committed). `haste tokenize` and the HasteText tests read it from there.
# A no-op when cached. Never fails: without network (or pip) it warns, and the tests that need the file skip.
set -uo pipefail
cd "$(dirname "$0")/.."

dir=.cache/clip
out=$dir/bpe_simple_vocab_16e6.txt.gz
sha256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
[ -f "$out" ] && exit 0

warn() { echo "warning: $* — the CLIP tokenizer tests will be skipped (or pass --tokenizer-vocab FILE)" >&2; exit 0; }
pip=""
for p in "${PIP:-}" pip3 pip "python3 -m pip"; do
    [ -n "$p" ] && $p --version >/dev/null 2>&1 && { pip=$p; break; }
done
[ -n "$pip" ] || warn "no pip found to fetch open_clip_torch==3.3.0"
mkdir -p "$dir"
echo "fetching open_clip_torch==3.3.0 from PyPI (1.5 MB, once) into $dir" >&2
timeout 600 $pip download --no-deps --quiet --disable-pip-version-check -d "$dir" open_clip_torch==3.3.0 >&2 \
    || warn "pip download open_clip_torch==3.3.0 failed (offline?)"
wheel=$(ls "$dir"/open_clip_torch-3.3.0-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || warn "no wheel downloaded"
python3 - "$wheel" "$out.tmp" <<'PY' || warn "could not unpack bpe_simple_vocab_16e6.txt.gz from $wheel"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as f:
    f.write(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz"))
PY
if [ "$(sha256sum "$out.tmp" | cut -d' ' -f1)" != "$sha256" ]; then rm -f "$out.tmp"; warn "bpe_simple_vocab_16e6.txt.gz has an unexpected SHA-256"; fi
mv "$out.tmp" "$out" && rm -f "$wheel"
echo "cached $out" >&2
