#!/usr/bin/python3
"""make_fixtures.py - regenerates every committed reference fixture under tests/fixtures/.
Each part lives in its own script; this one runs them in turn.  Needs Debian's python3-torch
(fixtures_imgaug.py alone needs only numpy + PIL):
    /usr/bin/python3 tests/make_fixtures.py      (or: make fixtures)"""
import os
import runpy

HERE = os.path.dirname(os.path.abspath(__file__))
for part in ["fixtures_nn.py", "fixtures_torchzip.py", "fixtures_imgaug.py", "fixtures_creff.py"]:  # torchzip reads clip/tiny.safetensors
    runpy.run_path(os.path.join(HERE, part), run_name="__main__")
