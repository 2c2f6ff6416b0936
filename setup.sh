#!/bin/sh
# qlens set-up on Debian 12: installs missing packages, builds, and runs the
# quickstart or the test suite.
#
#   ./setup.sh run      set up, build, and run the main job on the shipped example
#   ./setup.sh check    set up, build with -Werror, run the whole test suite, then
#                       again under AddressSanitizer + UndefinedBehaviorSanitizer
#   ./setup.sh deps     install missing Debian packages only
#   ./setup.sh build    build into ./build only
set -eu

top=$(cd "$(dirname "$0")" && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)

PACKAGES="build-essential autoconf automake libtool pkg-config
protobuf-c-compiler libprotobuf-c-dev libonnx-dev libonnx-testdata
libcjson-dev libcsv-dev libcmocka-dev libncurses-dev libopenblas-dev zlib1g-dev
tmux dataset-fashion-mnist"

say() { printf '==> %s\n' "$*" >&2; }

deps() {
    missing=
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
            missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    say "installing Debian packages:$missing"
    sudo=
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
}

# build DIR [configure args...]
build() {
    dir=$1
    shift
    [ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ] ||
        { say "autoreconf"; mkdir -p m4; autoreconf -fi >/dev/null; }
    mkdir -p "$dir"
    if [ ! -f "$dir/config.status" ] || [ "$dir/config.status" -ot configure ] ||
       [ "$(cat "$dir/.qlens-config" 2>/dev/null)" != "$*" ]; then
        say "configure $dir: $*"
        (cd "$dir" && "$top/configure" -q "$@")
        printf '%s' "$*" > "$dir/.qlens-config"
    fi
    say "make in $dir"
    make -C "$dir" -s -j"$jobs"
}

quickstart() {
    ex=examples/fmnist
    say "qlens info $ex/fmnist_resnet.onnx"
    ./build/qlens info "$ex/fmnist_resnet.onnx"
    say "qlens eval (float) on 1000 Fashion-MNIST test images"
    ./build/qlens eval "$ex/fmnist_resnet.onnx" --data "$ex/eval.npy" --labels "$ex/eval_labels.npy"
    say "qlens run $ex/quickstart.qls: calibrate, eval, sensitivity, raise the worst layer, save"
    mkdir -p build/quickstart
    ./build/qlens run "$ex/quickstart.qls" --var OUT=build/quickstart
    say "written: build/quickstart/quickstart.json, quickstart_sensitivity.csv, quickstart_layers.csv"
}

check() {
    build build --enable-werror CFLAGS="-O2 -g"
    say "test suite (-O2 -Wall -Wextra -Werror)"
    make -C build -s -j"$jobs" check || { cat build/test-suite.log 2>/dev/null | tail -n 80; exit 1; }
    # -O2 as above: at -O1 the kernels' vector accumulators stay on the stack,
    # each access shadow-checked, and the suite ran three times slower
    build build-asan --enable-werror --enable-sanitizers CFLAGS="-O2 -g"
    say "test suite under ASan + UBSan"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        make -C build-asan -s -j"$jobs" check QLENS_SANITIZED=1 ||
        { cat build-asan/test-suite.log 2>/dev/null | tail -n 80; exit 1; }
}

case "${1:-run}" in
deps) deps ;;
build) deps; build build CFLAGS="-O2 -g" ;;
run) deps; build build CFLAGS="-O2 -g"; quickstart ;;
check) deps; check ;;
*) echo "usage: $0 [run|check|deps|build]" >&2; exit 2 ;;
esac
