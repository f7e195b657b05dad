#!/usr/bin/env bash
# Wall-clock times of what a new user runs first, on this machine's CPU (the times README.md
# and docs/training.md quote). Run it alone (on the shared machine: under the heavy-job lock):
#   flock /tmp/robustlab-heavy.lock bash benchmarks/cpu_times.sh [MNIST_DATA_DIR] > times.txt
# MNIST_DATA_DIR holds mnist.npz (default /work/shared/data/mnist); the MNIST presets are skipped
# without it. Prints one line per command: label, seconds, exit status; then the demo's stderr
# line count (its progress off a terminal). DEMO_OUT=DIR keeps the demo's figure and table there.
# Each line ends with the 1-minute load average before and after the command: on a shared
# machine a time means little without it.
set -u
mnist=${1:-/work/shared/data/mnist}
out=$(mktemp -d)
export ROBUSTLAB_RUNS="$out/runs"
exec 3>&1  # the timings go here, whatever a command's own output is redirected to
time_it() {
    local label=$1 start end status load_before
    shift
    load_before=$(cut -d' ' -f1 /proc/loadavg)
    start=$(date +%s.%N)
    "$@"
    status=$?
    end=$(date +%s.%N)
    printf "%-28s %8.1f s  exit %d  load %s -> %s\n" "$label" "$(echo "$end - $start" | bc)" "$status" \
        "$load_before" "$(cut -d' ' -f1 /proc/loadavg)" >&3
}
echo "$(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p')"
for _ in 1 2 3; do time_it "robustlab --help" robustlab --help >/dev/null; done
time_it "robustlab train (digits)" robustlab train --quiet >/dev/null
time_it "experiment smoke" robustlab experiment data_scaling --scale smoke --quiet >/dev/null
if [ -f "$mnist/mnist.npz" ]; then
    for preset in aol-mlp-mnist-small aol-lcn-mnist-small; do
        time_it "train $preset" robustlab train --config "$preset" --data-dir "$mnist" --quiet \
            --json > "$out/$preset.json"
        python -c "import json, sys; r = json.load(open(sys.argv[1])); \
print(f'  {sys.argv[2]}: accuracy {r[\"accuracy\"]:.3f}, CRA 36/255 {r[\"cra\"][0][\"cra\"]:.3f}, \
training {r[\"train_time_s\"]:.0f} s')" "$out/$preset.json" "$preset"
    done
fi
time_it "robustlab demo" robustlab demo --out "${DEMO_OUT:-$out/demo}" 2> "$out/demo-progress.txt" >/dev/null
echo "demo progress lines (stderr, not a terminal): $(wc -l < "$out/demo-progress.txt")"
rm -rf "$out"
