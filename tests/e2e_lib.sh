# Shared by the end-to-end test scripts (sourced): a scratch folder removed
# on exit, PASS/FAIL counting, and checks that run a command and look at its
# exit status and standard error.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "PASS $1"; }
ko() { fail=$((fail + 1)); echo "FAIL $1"; [ -f "$tmp/err" ] && sed 's/^/  stderr: /' "$tmp/err"; }

# expect_ok NAME CMD...: exit status 0 (stdout in $tmp/out, stderr in $tmp/err)
expect_ok() {
    name=$1
    shift
    if "$@" >"$tmp/out" 2>"$tmp/err"; then ok "$name"; else ko "$name (exit $?)"; fi
}

# expect_fail NAME PATTERN CMD...: non-zero exit and stderr matching PATTERN
expect_fail() {
    name=$1 pat=$2
    shift 2
    if "$@" >"$tmp/out" 2>"$tmp/err"; then
        ko "$name (exit 0)"
    elif grep -q -- "$pat" "$tmp/err"; then
        ok "$name"
    else
        ko "$name (message did not match: $pat)"
    fi
}

# json_num KEY < json: the first number after "KEY": (empty for null)
json_num() { sed -n "s/.*\"$1\":[[:space:]]*\\([-0-9.eE+]*\\).*/\\1/p" | head -n 1; }

# expect_status NAME STATUS STDERR-LINE CMD...: exit status and the exact
# first stderr line (not compared when empty)
expect_status() {
    name=$1 want=$2 msg=$3
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"
    got=$?
    first=$(head -n 1 "$tmp/err")
    if [ "$got" != "$want" ]; then
        ko "$name (exit $got, expected $want)"
    elif [ -n "$msg" ] && [ "$first" != "$msg" ]; then
        ko "$name (stderr '$first', expected '$msg')"
    else
        ok "$name"
    fi
}
