# Sourced by the demo scripts: `phase_done NAME` records how long the phase just finished took; `phases_report TITLE`
# prints them all at the end. `start` is when the script began.
phases=()
phase_start=$(date +%s)
start=$phase_start
phase_done() { local now; now=$(date +%s); phases+=("$(printf '%-44s %5d s' "$1" $((now - phase_start)))"); phase_start=$now; }
phases_report() { echo; echo "== $1 (wall time)"; printf '%s\n' "${phases[@]}"; }
