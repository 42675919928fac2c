#!/usr/bin/env bash
# Installs the Debian 12 packages haste builds, tests and runs against. Idempotent: packages already installed
# are skipped, and apt-get (update included) runs only when something is missing.
set -euo pipefail

PACKAGES=(
  libopenblas-dev        # BLAS for the CPU backend (COpenBLAS)
  liblapacke-dev         # LAPACK for FID's matrix square root (CLAPACKE)
  libpng-dev             # PNG images
  libjpeg62-turbo-dev    # JPEG images
  libhdf5-dev            # HDF5 datasets
  dataset-fashion-mnist  # the small dataset the demo trains on
  openmpi-bin            # mpirun: data-parallel ranks (haste loads libmpi.so.40 at run time; the mpirun tests use it)
  libopenmpi-dev         # mpi.h and mpicc, to check the Open MPI constants haste uses (HasteDistributed/MPILibrary.swift)
)

if ! command -v dpkg >/dev/null 2>&1; then
  echo "setup: not a Debian system; install the equivalents of: ${PACKAGES[*]}" >&2
else
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} > 0)); then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "setup: installing ${missing[*]}"
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

command -v swift >/dev/null 2>&1 || {
  echo "setup: swift is not on PATH; install Swift 6.x from https://www.swift.org/install/linux/" >&2
  exit 1
}
