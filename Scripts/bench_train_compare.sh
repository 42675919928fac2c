#!/usr/bin/env bash
# Same as `Scripts/bench_compare.sh train ARGS...`: haste vs PyTorch training steps, img/s, ratio, peak RSS.
exec "$(dirname "$0")/bench_compare.sh" train "$@"
