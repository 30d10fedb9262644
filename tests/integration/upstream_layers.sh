#!/bin/sh
# The upstream's files call one way only (gateway/upstream_internal.h): each may call
# the files after it in this list, never one before it, and never itself through
# another. Read off the built objects' symbol tables, so that a new call upward fails
# here rather than in a review.
set -eu
builddir=${builddir:-.}
order="upstream upstream_conn upstream_device upstream_twin upstream_c2d upstream_links"
# libtool keeps a PIC object in .libs/ when it builds shared code, else beside the .lo
obj() { if [ -f "$builddir/gateway/$1.o" ]; then echo "$builddir/gateway/$1.o"; else echo "$builddir/gateway/.libs/$1.o"; fi; }
for f in $order; do
    [ -f "$(obj "$f")" ] || { echo "upstream_layers: $(obj "$f") not built"; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# which file defines each internal function
for f in $order; do
    nm -g --defined-only "$(obj "$f")" | awk -v f="$f" '$3 ~ /^up_/ {print $3, f}'
done | sort > "$tmp/defined"
bad=0 checked=0
rank() { i=0; for f in $order; do [ "$f" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; }
for f in $order; do
    nm -u "$(obj "$f")" | awk '$2 ~ /^up_/ {print $2}' | sort -u > "$tmp/used"
    join "$tmp/used" "$tmp/defined" | while read -r sym callee; do
        if [ "$(rank "$callee")" -le "$(rank "$f")" ]; then
            echo "FAIL: gateway/$f.c calls $sym of gateway/$callee.c, which comes before it"
            echo x >> "$tmp/bad"
        fi
        echo x >> "$tmp/checked"
    done
done
[ -f "$tmp/checked" ] || { echo "upstream_layers: no internal calls found: the check read nothing"; exit 1; }
checked=$(wc -l < "$tmp/checked")
if [ -f "$tmp/bad" ]; then
    echo "0 passed, 1 failed"
    exit 1
fi
echo "upstream_layers: $checked internal calls, all downward ($order)"
echo "1 passed, 0 failed"
