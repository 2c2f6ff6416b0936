#!/bin/sh
# End-to-end tests of plugins: the example plugin is built out of tree with its
# own Makefile against the in-tree header, installed into a folder named by
# QLENS_PLUGIN_PATH, and listed by `qlens plugins` next to modules that must be
# refused (wrong ABI version, not a plugin, shadowed), with their reasons.
set -u
: "${QLENS:?}" "${QLENS_SRCDIR:?}" "${QLENS_BUILDDIR:?}"
. "$QLENS_SRCDIR/tests/e2e_lib.sh"

# run NAME WANT_EXIT CMD...: the exit status must be WANT_EXIT
run() {
    name=$1 want=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ "$rc" -eq "$want" ]; then ok "$name"; else ko "$name (exit $rc, want $want)"; fi
}

# has NAME FIXED-STRING [FILE]: the output holds that line part
has() {
    if grep -qF -- "$2" "${3:-$tmp/out}"; then ok "$1"; else
        ko "$1 (no '$2' in output)"
        sed 's/^/  stdout: /' "${3:-$tmp/out}"
    fi
}

# --- usage ------------------------------------------------------------------------
run "plugins --help" 0 "$QLENS" plugins --help
has "help names QLENS_PLUGIN_PATH" 'QLENS_PLUGIN_PATH'
run "plugins with an argument" 2 "$QLENS" plugins sigma
has "argument refused" "qlens plugins: takes no arguments, got 'sigma'" "$tmp/err"
run "plugins --bogus" 2 "$QLENS" plugins --bogus
run "qlens --help lists plugins" 0 "$QLENS" --help
has "help lists plugins" 'plugins'

# --- build the example out of tree, as a user would -------------------------------
mkdir "$tmp/ex" "$tmp/plug"
cp "$QLENS_SRCDIR/examples/plugin/Makefile" "$QLENS_SRCDIR/examples/plugin/sigma.c" "$tmp/ex/"
# MAKEFLAGS of the `make check` that runs us must not leak into the user's make
run "example builds" 0 env MAKEFLAGS= MFLAGS= make -s -C "$tmp/ex" \
    QLENS_INCLUDE="$QLENS_SRCDIR/plugins" CC="${CC:-cc}" CFLAGS="-O2 -Wall -Wextra -Werror"
[ -f "$tmp/ex/sigma.so" ] && ok "sigma.so built" || ko "sigma.so built"
run "example installs" 0 env MAKEFLAGS= MFLAGS= make -s -C "$tmp/ex" install \
    PLUGIN_DIR="$tmp/plug" QLENS_INCLUDE="$QLENS_SRCDIR/plugins" CC="${CC:-cc}"
[ -f "$tmp/plug/sigma.so" ] && ok "sigma.so installed" || ko "sigma.so installed"
libs="$QLENS_BUILDDIR/tests/plugins/.libs"
cp "$libs/bad_abi.so" "$libs/no_entry.so" "$tmp/plug/"
echo 'not a module' > "$tmp/plug/readme.txt"

# --- listing ----------------------------------------------------------------------
QLENS_PLUGIN_PATH="$tmp/plug"
export QLENS_PLUGIN_PATH
run "plugins (some refused: still exit 0)" 0 "$QLENS" plugins
has "sigma listed" 'sigma (activation): clip at mean +- k standard deviations of the histogram'
has "sigma parameter" 'k          float default 4        range [0.5, 20]  half-width of the range in standard deviations'
has "sigma file" "file: $tmp/plug/sigma.so"
has "refused section" 'refused:'
has "wrong ABI refused" "$tmp/plug/bad_abi.so: ABI version 7, qlens needs 1"
has "no entry refused" "$tmp/plug/no_entry.so: no qlens_plugin_entry symbol (not a qlens plugin)"
grep -q 'readme' "$tmp/out" && ko "non-.so files are not listed" || ok "non-.so files are not listed"

run "plugins --json" 0 "$QLENS" plugins --json
tr -d ' \t\n' < "$tmp/out" > "$tmp/json"
has "json sigma" '{"name":"sigma","kinds":["activation"],"summary":"clipatmean+-kstandarddeviationsofthehistogram","params":[{"key":"k","type":"float","default":4,"min":0.5,"max":20,' "$tmp/json"
has "json refused reason" '"reason":"ABIversion7,qlensneeds1"' "$tmp/json"
has "json search path" "\"search_path\":[\"$tmp/plug\"," "$tmp/json"

run "plugins --path" 0 "$QLENS" plugins --path
[ "$(sed -n 1p "$tmp/out")" = "$tmp/plug" ] && ok "path: QLENS_PLUGIN_PATH first" ||
    ko "path: QLENS_PLUGIN_PATH first"
sed -n 2p "$tmp/out" | grep -q '/plugins/\.libs$' && ok "path: then the build tree" ||
    ko "path: then the build tree"
[ "$(wc -l < "$tmp/out")" -eq 3 ] && ok "path: then the install folder" ||
    ko "path: then the install folder"

# --- shadowing: the first folder wins -------------------------------------------
QLENS_PLUGIN_PATH="$tmp/plug:$tmp/ex"
run "plugins with sigma twice" 0 "$QLENS" plugins
has "second sigma shadowed" "$tmp/ex/sigma.so: shadowed by $tmp/plug/sigma.so"
has "first sigma used" "file: $tmp/plug/sigma.so"

# --- the man page's complete example compiles and loads ---------------------------
mkdir "$tmp/man"
awk '/^\.SH EXAMPLE/ { e = 1 } e && /^\.fi/ && on { exit } e && on { print } e && /^\.nf/ { on = 1 }' \
    "$QLENS_SRCDIR/man/qlens-plugin.7" | sed 's/\\-/-/g' > "$tmp/man/sigma.c"
run "qlens-plugin(7) example compiles" 0 "${CC:-cc}" -O2 -Wall -Wextra -Wmissing-prototypes -Werror \
    -fPIC -shared -I"$QLENS_SRCDIR/plugins" -o "$tmp/man/sigma.so" "$tmp/man/sigma.c" -lm
run "qlens-plugin(7) example loads" 0 env QLENS_PLUGIN_PATH="$tmp/man" "$QLENS" plugins
has "qlens-plugin(7) example listed" "file: $tmp/man/sigma.so"

# --- through calibrate, once it and the shipped minmax exist -----------------------
if "$QLENS" --help | grep -q '^  calibrate' && [ -f "$QLENS_BUILDDIR/plugins/.libs/minmax.so" ]; then
    ex="$QLENS_SRCDIR/examples/fmnist"
    run "calibrate --algo sigma:k=3.0" 0 env QLENS_PLUGIN_PATH="$tmp/plug" "$QLENS" calibrate \
        "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --limit 32 -o "$tmp/q.json" \
        --algo sigma:k=3.0 --weight-algo minmax
    has "config names the canonical spec" '"sigma:k=3"' "$tmp/q.json"
    # a value the plugin's schema refuses is a bad option value: usage, 2
    run "calibrate --algo sigma:k=99" 2 env QLENS_PLUGIN_PATH="$tmp/plug" "$QLENS" calibrate \
        "$ex/fmnist_resnet.onnx" --data "$ex/calib.npy" --limit 32 -o "$tmp/q2.json" \
        --algo sigma:k=99 --weight-algo minmax
    has "calibrate quotes the bad spec" "algorithm 'sigma:k=99': k=99 is out of range [0.5, 20]" "$tmp/err"
else
    echo "SKIP calibrate with a user plugin (no calibrate command or no built minmax yet)"
fi

# --- the build tree's own plugins all load (once they exist) ----------------------
unset QLENS_PLUGIN_PATH
run "plugins (build tree)" 0 "$QLENS" plugins
for so in "$QLENS_BUILDDIR"/plugins/.libs/*.so; do
    [ -f "$so" ] || continue
    has "build-tree module $(basename "$so") loads" "file: $so"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
