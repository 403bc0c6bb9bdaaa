#!/usr/bin/env bash
# tests/fuzz/deps.sh SRC - prints the lib/ sources SRC needs: for every header it includes
# (followed through headers and through the matching .c files), the .c of the same name.
# Used by the Makefile to link a fuzz target against exactly the code it reaches.
set -u
cd "$(dirname "$0")/../.."
declare -A seen=()
todo=("$1") out=()
while [ ${#todo[@]} -gt 0 ]; do
    f=${todo[0]}; todo=("${todo[@]:1}")
    for h in $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f"); do
        [ -n "${seen[$h]:-}" ] && continue
        seen[$h]=1
        for p in lib/*/"$h"; do
            [ -f "$p" ] || continue
            todo+=("$p")
            c=${p%.h}.c
            if [ -f "$c" ]; then out+=("$c"); todo+=("$c"); fi
        done
    done
done
printf '%s\n' "${out[@]}" | sort -u | tr '\n' ' '
