#!/bin/sh
# bench/py.sh - the PyTorch side of every comparison: Debian's python3 (python3-torch) with
# the machine's OpenBLAS overrides removed.  OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on
# some hosts to force one kernel family) made PyTorch's fp32 CLIP 25-40 % slower here; the
# reference must run as a user's PyTorch would.  Our side keeps the environment it is given.
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u OPENBLAS_VERBOSE /usr/bin/python3 "$@"
