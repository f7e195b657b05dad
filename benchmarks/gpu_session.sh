#!/usr/bin/env bash
# Steps of a GPU benchmark session; benchmarks/gpu_session.md says which call runs which.
#
#   prepare            HERE (the development machine): stage CIFAR-10/MNIST pieces and the
#                      commit into the git-ignored .stage/{a,b,c} (each under the 64 MiB a call carries)
#   stage              DEVICE: copy the carried .stage/* folder(s) into /root/stage/
#   assemble           DEVICE: join the pieces into /root/data/{cifar10,mnist}.npz and check them
#   bench NAME ARGS..  DEVICE: bench.py --size full --device cuda --data-dir /root/data ARGS;
#                      writes $OUT/NAME.md (the table, with header), NAME.json and NAME.log.
#                      On a fresh machine (no /root/data) throughput jobs use synthetic data.
set -euo pipefail
cd "$(dirname "$0")/.."

SHARED_DATA=${SHARED_DATA:-/work/shared/data}
STAGE=/root/stage
DATA=/root/data

prepare() {
    (cd "$SHARED_DATA" && sha256sum --quiet -c SHA256SUMS)
    rm -rf .stage/a .stage/b .stage/c
    mkdir -p .stage/a/cifar10 .stage/b/cifar10 .stage/c/cifar10 .stage/c/mnist
    cp "$SHARED_DATA/cifar10/train_xz_part0.npz" .stage/a/cifar10/
    cp "$SHARED_DATA/cifar10/train_xz_part1.npz" .stage/b/cifar10/
    cp "$SHARED_DATA/cifar10/test.npz" .stage/c/cifar10/
    cp "$SHARED_DATA/mnist/mnist.npz" .stage/c/mnist/
    cp "$SHARED_DATA/assemble.py" .stage/c/
    local commit
    commit=$(git rev-parse --short=12 HEAD)
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then commit="$commit (dirty)"; fi
    for folder in a b c; do echo "$commit" > ".stage/$folder/COMMIT"; done  # whichever call benches first
    du -sh .stage/a .stage/b .stage/c
    echo "staged for commit $commit"
}

stage() {
    mkdir -p "$STAGE"
    local found=0
    for folder in .stage/*/; do
        [ -d "$folder" ] || continue
        cp -rf "$folder". "$STAGE"/
        found=1
    done
    [ "$found" = 1 ] || { echo "no .stage folder was carried: name one in carry" >&2; exit 2; }
    find "$STAGE" -type f | sort | xargs ls -l
}

assemble() {
    python3 "$STAGE/assemble.py" "$DATA" --check
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
}

bench() {
    local name=$1
    shift
    local data_args=(--data-dir "$DATA")
    if [ ! -f "$DATA/cifar10.npz" ]; then  # a fresh machine: the staged data went with the last one
        case " $* " in
            *accuracy*) echo "$DATA/cifar10.npz is missing (fresh machine): stage the data again (calls 1-3)" >&2; exit 3 ;;
        esac
        echo "note: $DATA/cifar10.npz is missing (fresh machine): throughput on synthetic data of CIFAR-10's shape" >&2
        data_args=()
    fi
    export PYTHONPATH=src PYTHONUNBUFFERED=1
    export BENCH_GIT_COMMIT=${BENCH_GIT_COMMIT:-$(cat "$STAGE/COMMIT" 2>/dev/null || echo unknown)}
    local out=${OUT:-/tmp/bench-out}
    mkdir -p "$out"
    python3 benchmarks/bench.py --size full --device cuda "${data_args[@]}" --append "$out/$name.md" --json "$@" \
        > "$out/$name.json" 2> "$out/$name.log" || { tail -n 40 "$out/$name.log"; exit 1; }
    cat "$out/$name.md"
}

case "${1:-}" in
    prepare | stage | assemble) "$1" ;;
    bench) shift; bench "$@" ;;
    *) echo "usage: $0 prepare | stage | assemble | bench NAME [bench.py arguments]" >&2; exit 2 ;;
esac
