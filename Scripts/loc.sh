#!/usr/bin/env bash
# Lines of Swift per module, and the file budget of STYLE R15: a Swift file in Sources/ or Tests/ may have at most
# 400 lines (kernel-source files in Sources/HasteCUDA/Kernels/ at most 600). Exits 1 naming every file over budget.
set -euo pipefail
cd "$(dirname "$0")/.."

count() { find "$@" -name '*.swift' -print0 | xargs -0 -r cat | wc -l; }
printf '%-32s %6s %7s\n' module files lines
for dir in Sources/*/ Tests/HasteTests/*/; do
  files=$(find "$dir" -name '*.swift' | wc -l)
  [ "$files" -gt 0 ] || continue
  printf '%-32s %6d %7d\n' "${dir%/}" "$files" "$(count "$dir")"
done
printf '%-32s %6d %7d\n' total "$(find Sources Tests -name '*.swift' | wc -l)" "$(count Sources Tests)"

status=0
while IFS= read -r -d '' f; do
  budget=400
  case "$f" in Sources/HasteCUDA/Kernels/*) budget=600 ;; esac
  n=$(wc -l < "$f")
  if [ "$n" -gt "$budget" ]; then
    echo "over budget: $f has $n lines (at most $budget): split it by facet (Type+Facet.swift)" >&2
    status=1
  fi
done < <(find Sources Tests -name '*.swift' -print0 | sort -z)
exit "$status"
