#!/usr/bin/env bash
# A self-contained haste for GPU nodes without a Swift toolchain (issue 11 §5; README "Running on a GPU node").
#
#   Scripts/package.sh            → dist/haste-<version>-linux-x86_64.tar.xz (its path is the last line printed)
#
# xz when installed (≈ 30 MiB: the static Foundation's ICU data and OpenBLAS's per-CPU kernels compress far better
# than with gzip, ≈ 50 MiB), else .tar.gz; HASTE_PACKAGE_FORMAT=gz forces gzip. Unpack with `tar -xf` (GNU tar
# picks the decompressor), or Python's tarfile where tar has no xz (Scripts/gpu_check.sh does both).
#
# Target: a bare Linux x86-64 with glibc and the NVIDIA driver only. So the package holds
#   haste       release build, Swift standard library and Foundation linked statically (--static-swift-stdlib);
#   lib/        every other shared library haste needs, as `ldd` resolves them here: OpenBLAS (Debian's
#               DYNAMIC_ARCH build: picks its kernels for the node's CPU at run time), LAPACK(E), gfortran and
#               quadmath, libpng, libjpeg, zlib, HDF5 and what HDF5 pulls in (libcurl, OpenSSL, …), libstdc++ and
#               libgcc_s. Only the glibc family (libc, libm, libpthread, libdl, librt, libresolv, libutil, libanl,
#               the loader) is left to the node: it is the one ABI every Linux has, and mixing another glibc breaks.
# The binary's rpath is $ORIGIN/lib as DT_RPATH (not DT_RUNPATH): DT_RPATH also serves the libraries' own
# dependencies (libhdf5 → libcurl …). patchelf is used when installed; otherwise the linker writes it
# (-rpath with --disable-new-dtags). CUDA (driver, NVRTC, cuBLAS) and MPI are never packaged: haste dlopens them
# from the node (HASTE_CUDA_LIB_DIR, LD_LIBRARY_PATH, a Python env's nvidia/*/lib, /usr/local/cuda*).
#
# Checks before packing: `ldd` of the packaged binary resolves into lib/ or the glibc family only, and
# `env -i` runs of `haste --version`, `haste doctor` and a small `haste selftest --device cpu` from an unrelated
# directory succeed. Environment: HASTE_PACKAGE_SKIP_BUILD=1 packs the existing release build (no swift build).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

version=$(sed -n 's/.*current = "\(.*\)".*/\1/p' Sources/HasteIO/Version.swift)
[ -n "$version" ] || { echo "package.sh: no version in Sources/HasteIO/Version.swift" >&2; exit 1; }
name="haste-$version-linux-x86_64"
dist="$root/dist/$name"

# glibc and the loader: present on every node, never shipped.
is_system() {
  case "$1" in
    linux-vdso.so.*|ld-linux*|libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|libutil.so.*|libanl.so.*|libmvec.so.*) return 0 ;;
    *) return 1 ;;
  esac
}

build_flags=(-c release --static-swift-stdlib --product haste)
if ! command -v patchelf >/dev/null 2>&1; then
  build_flags+=(-Xlinker --disable-new-dtags -Xlinker -rpath -Xlinker '$ORIGIN/lib')
fi
if [ "${HASTE_PACKAGE_SKIP_BUILD:-0}" != 1 ]; then
  echo "package.sh: swift build ${build_flags[*]}" >&2
  nice swift build "${build_flags[@]}" >&2
fi
bin="$(swift build "${build_flags[@]}" --show-bin-path)/haste"
[ -x "$bin" ] || { echo "package.sh: no release binary at $bin" >&2; exit 1; }

rm -rf "$dist" "$dist.tar.gz" "$dist.tar.xz"
mkdir -p "$dist/lib"
cp "$bin" "$dist/haste"
strip --strip-debug "$dist/haste"
cp -R configs "$dist/configs"            # the shipped configs (demo, SiT-B/2, SiT-XL/2 HASTE/REPA/vanilla): a few KiB

# Every non-system library the binary needs (ldd lists the transitive closure), under its soname.
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | while read -r soname path; do
  is_system "$soname" && continue
  cp -L "$path" "$dist/lib/$soname"
  chmod u+w "$dist/lib/$soname"
  strip --strip-unneeded "$dist/lib/$soname" 2>/dev/null || true
done
if command -v patchelf >/dev/null 2>&1; then
  patchelf --force-rpath --set-rpath '$ORIGIN/lib' "$dist/haste"
  for lib in "$dist"/lib/*.so*; do patchelf --force-rpath --set-rpath '$ORIGIN' "$lib"; done
fi
# The oldest glibc the package runs on: the highest GLIBC_x.y symbol version any of its files asks for.
glibc_floor() { for f in "$@"; do objdump -T "$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*'; done | sort -uV | tail -1 | sed 's/GLIBC_//'; }
floor="?" ; floor_bin="?"
if command -v objdump >/dev/null 2>&1; then
  floor=$(glibc_floor "$dist/haste" "$dist"/lib/*)
  floor_bin=$(glibc_floor "$dist/haste" $(ls "$dist"/lib/* | grep -v -e 'libstdc++' -e 'libgcc_s'))
fi
cat > "$dist/README.txt" <<EOF
haste $version for Linux x86-64 with glibc >= $floor (or >= $floor_bin after moving lib/libstdc++.so.6 and
lib/libgcc_s.so.1 aside to use the system's, which any machine with PyTorch has). Run ./haste from this folder or
put it on PATH; lib/ must stay beside it.
CUDA is found at run time: the NVIDIA driver's libcuda.so.1, and NVRTC + cuBLAS from HASTE_CUDA_LIB_DIR,
LD_LIBRARY_PATH, a Python environment with PyTorch (its nvidia/*/lib), or /usr/local/cuda*. Check with:
  ./haste doctor
  ./haste selftest --device cuda
EOF

# 1. Every library resolves into the package or to glibc.
bad=$(ldd "$dist/haste" | awk '$2 == "=>" { print $1, $3 }' | while read -r soname path; do
  is_system "$soname" && continue
  case "$path" in "$dist/lib/"*) ;; *) echo "$soname => $path" ;; esac
done)
if [ -n "$bad" ]; then echo "package.sh: libraries resolved outside the package:" >&2; echo "$bad" >&2; exit 1; fi
if ldd "$dist/haste" | grep -q "not found"; then ldd "$dist/haste" >&2; exit 1; fi

# 2. It runs with an empty environment from an unrelated directory.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(
  cd "$scratch"
  env -i "$dist/haste" --version
  env -i HOME="$scratch" "$dist/haste" doctor > doctor.txt
  env -i HOME="$scratch" "$dist/haste" selftest --device cpu --ops "matmul,cast f32,layerNorm,attention" --threads 2 > selftest.txt
) >&2 || { echo "package.sh: the packaged binary failed to run with env -i (see above)" >&2; cat "$scratch"/*.txt >&2 2>/dev/null; exit 1; }
tail -1 "$scratch/selftest.txt" >&2

if command -v xz >/dev/null 2>&1 && [ "${HASTE_PACKAGE_FORMAT:-xz}" = xz ]; then
  archive="$dist.tar.xz"
  tar -C "$root/dist" -cf - "$name" | xz -9 -T0 > "$archive"
else
  archive="$dist.tar.gz"
  tar -C "$root/dist" -cf - "$name" | gzip -9 > "$archive"
fi
unpacked=$(du -sm "$dist" | cut -f1)
packed=$(du -m "$archive" | cut -f1)
echo "package.sh: $(ls "$dist/lib" | wc -l) libraries; ${unpacked} MiB unpacked, ${packed} MiB compressed; needs glibc >= $floor ($floor_bin with the system's libstdc++)" >&2
echo "$archive"
