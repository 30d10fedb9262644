# Shared by the package tests (make_install.sh, check_package.sh), sourced: counting
# checks, and waiting for a line in a log.
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
# the totals, then exit non-zero if a check failed
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}
# wait_for FILE PATTERN SECONDS
wait_for() {
    i=0
    until grep -q "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt $(($3 * 10)) ]; then
            echo "no \"$2\" in $1 within $3 s:"
            cat "$1"
            return 1
        fi
        sleep 0.1
    done
}
