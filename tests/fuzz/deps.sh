#!/usr/bin/env bash
# tests/fuzz/deps.sh SRC - prints the lib/ sources SRC needs: for every header it includes
# (followed through headers and through the matching .c files), the .c of the same name, or
# for a header without one the .c files of its folder that include it.
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
            if [ -f "$c" ]; then out+=("$c"); todo+=("$c"); continue; fi
            # a header without a .c of its name (nn.h, since lib/nn's split): the .c files
            # of its folder that include it, directly or through a header of the folder
            # (nn_impl.h)
            dir=$(dirname "$p")
            for c in "$dir"/*.c; do
                incs=$(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$c")
                for i in $incs; do [ ! -f "$dir/$i" ] || incs+=" $(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$dir/$i")"; done
                [[ " $(echo $incs) " == *" $h "* ]] && { out+=("$c"); todo+=("$c"); }
            done
        done
    done
done
printf '%s\n' "${out[@]}" | sort -u | tr '\n' ' '
