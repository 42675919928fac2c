#!/usr/bin/env bash
# The > 4 GiB ADM batch check (not CI): streams N (default 50 000) 256x256x3 uint8 images through haste's
# NpzWriter (`haste generate --npz-selftest N PATH`, pixel (i, y, x, c) = (i*131 + 3y + 5x + 7c) mod 256),
# then opens the archive in numpy: zipfile's CRC check over every byte, np.load's arr_0 (shape, dtype, a few
# images compared with the pattern). Needs ~10 GB free disk at OUT and ~10 GB of memory for np.load.
#   N=50000  OUT=/tmp/haste-big-npz/arr.npz  TORCH_PYTHON=/opt/torchvenv/bin/python (numpy)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-50000}"
OUT="${OUT:-/tmp/haste-big-npz/arr.npz}"
PY="${TORCH_PYTHON:-/opt/torchvenv/bin/python}"
need=$(( N * 196608 / 1024 / 1024 + 64 ))
mkdir -p "$(dirname "$OUT")"
avail=$(df -Pm "$(dirname "$OUT")" | awk 'NR==2 {print $4}')
[ "$avail" -gt "$need" ] || { echo "check_big_npz: need ${need} MB free at $(dirname "$OUT"), have ${avail} MB" >&2; exit 1; }

swift build -c release --product haste >&2
start=$(date +%s)
.build/release/haste generate --npz-selftest "$N" "$OUT"
echo "wrote $(stat -c %s "$OUT") bytes in $(( $(date +%s) - start )) s" >&2

"$PY" - "$OUT" "$N" <<'PYEOF'
import sys, time, zipfile
import numpy as np
path, n = sys.argv[1], int(sys.argv[2])
t = time.time()
with zipfile.ZipFile(path) as z:
    info = z.getinfo("arr_0.npy")
    print(f"zip: {len(z.infolist())} member, arr_0.npy {info.file_size} bytes, zip64 {info.file_size >= 0xFFFFFFFF}")
    bad = z.testzip()
    assert bad is None, f"CRC mismatch in {bad}"
print(f"CRC of every byte ok ({time.time() - t:.0f} s)")
t = time.time()
f = np.load(path, mmap_mode="r")
a = f["arr_0"]
assert a.dtype == np.uint8 and a.shape == (n, 256, 256, 3), (a.dtype, a.shape)
y, x, c = np.meshgrid(np.arange(256), np.arange(256), np.arange(3), indexing="ij")
for i in sorted({0, 1, n // 3, n - 1}):
    expected = ((i * 131 + 3 * y + 5 * x + 7 * c) % 256).astype(np.uint8)
    assert np.array_equal(a[i], expected), f"image {i} differs"
print(f"numpy: arr_0 {a.dtype} {a.shape}, {a.nbytes} bytes, images checked ({time.time() - t:.0f} s)")
PYEOF
echo "check_big_npz: OK ($OUT)"
