#!/usr/bin/python3
"""run_cases.py CASES EXPECT [-j N] [--timeout SEC] [--filter REGEX] - runs the hostile-input
matrix's cases (make_corpus.py's cases.jsonl) against the expectation table (expect.txt) and
prints every failure with its stderr, then "N cases, N passed, N failed".

Each case must:
  - exit with the code the first matching line of EXPECT gives (scenario, slot, case; shell
    patterns);
  - when that code is not 0: print on stderr exactly one line "TOOL: error: ..." (TOOL the
    binary, or the pipeline's name without .sh) and no other line holding "error:",
    followed by at most one "hint: ..." line; the tool's own progress lines may come before
    it, except for a usage error (exit 2): options are checked before any work, so then the
    error line is the first; and leave its output folder empty (no output, no NAME.tmp.PID);
  - when it is 0: print no "error:" line and leave no NAME.tmp.PID behind;
  - finish within the timeout (a hang is a failure).
check "char-device": OUT/null is made a character device (1,3, as /dev/null; root only,
else the case is left out) that the tool writes into: it must still be one afterwards.
Exit 0 when every case passed, 1 otherwise."""
import argparse
import concurrent.futures
import fnmatch
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time


def load_expect(path):
    rules = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            w = line.split("#", 1)[0].split()
            if not w:
                continue
            if len(w) != 4 or not w[3].isdigit():
                sys.exit("%s:%d: want 'scenario slot case exit', got: %s" % (path, n, line.rstrip()))
            rules.append((w[0], w[1], w[2], int(w[3]), n))
    return rules


def expected(rules, c, used):
    for sc, sl, ca, code, n in rules:
        if fnmatch.fnmatchcase(c["scenario"], sc) and fnmatch.fnmatchcase(c["slot"], sl) \
                and fnmatch.fnmatchcase(c["case"], ca):
            used.add(n)
            return code, n
    return None, None


def tmp_files(d):
    out = []
    for root, dirs, files in os.walk(d):
        out += [os.path.join(root, f) for f in files + dirs if re.search(r"\.tmp\.\d+$", f)]
    return out


def run_case(c, want, timeout):
    """-> list of problems (empty: passed), stderr text, exit code, seconds"""
    o = c["out"]
    os.makedirs(o, exist_ok=True)
    if c.get("check") == "char-device":
        os.mknod(os.path.join(o, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    t0 = time.monotonic()
    timeout = c.get("timeout", timeout)
    with open(c.get("stdin", "/dev/null"), "rb") as stdin:
        p = subprocess.Popen(c["argv"], cwd=o, stdin=stdin, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = p.communicate(timeout=timeout)
            rc, err = p.returncode, err.decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            # the whole process group: a pipeline's tools too (TERM first, its clean-up)
            for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
                try:
                    os.killpg(p.pid, sig)
                    _, err = p.communicate(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    err = b""
            return (["timed out after %d s%s" % (timeout, c.get("timeout_why", ""))],
                    (err or b"").decode("utf-8", "replace"), None, time.monotonic() - t0)
    dt = time.monotonic() - t0
    bad = []
    if rc != want:
        bad.append("exit %d, expected %d" % (rc, want))
    lines = err.splitlines()
    name = c["tool"]
    if want != 0:
        head = name + ": error: "
        at = [i for i, l in enumerate(lines) if l.startswith(head) and len(l) > len(head)]
        if len(at) != 1 or sum("error:" in l for l in lines) != 1:
            bad.append("not exactly one '%s: error: ...' line on stderr" % name)
        else:
            after = lines[at[0] + 1:]
            if len(after) > 1 or (after and not after[0].startswith("hint: ")):
                bad.append("lines after the error line (at most one 'hint:')")
            if want == 2 and at[0] > 0:
                bad.append("a usage error after %d lines of work: options are checked first" % at[0])
        left = [os.path.relpath(os.path.join(r, f), o) for r, ds, fs in os.walk(o) for f in fs + ds]
        left = [f for f in left if not (f == "null" and c.get("check") == "char-device")]
        if left:
            bad.append("left behind: " + " ".join(sorted(left)[:5]))
    else:
        if any("error:" in l for l in lines):
            bad.append("an error line on success")
        if tmp_files(o):
            bad.append("temporaries left: " + " ".join(tmp_files(o)[:3]))
    if c.get("check") == "char-device":
        st = os.lstat(os.path.join(o, "null"))
        if not stat.S_ISCHR(st.st_mode):
            bad.append("the character device OUT/null was replaced by a regular file")
    if rc is not None and rc < 0:
        bad.append("killed by signal %d" % -rc)
    return bad, err, rc, dt


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases")
    ap.add_argument("expect")
    ap.add_argument("-j", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--filter", default="", help="regex on 'scenario slot case'")
    ap.add_argument("--slowest", type=int, default=5, help="print the N slowest cases")
    ap.add_argument("--known", help="open bugs: 'scenario slot case  # why' lines (shell patterns); a "
                    "matching case that fails is reported KNOWN, one that passes fails the run (FIXED: "
                    "remove its line)")
    a = ap.parse_args()
    rules = load_expect(a.expect)
    known = []
    if a.known:
        for l in open(a.known):
            w = l.split("#", 1)[0].split()
            if w:
                known.append(tuple(w[:3]))
    is_known = lambda c: any(fnmatch.fnmatchcase(c["scenario"], k[0]) and fnmatch.fnmatchcase(c["slot"], k[1])
                             and fnmatch.fnmatchcase(c["case"], k[2]) for k in known)
    cases = [json.loads(l) for l in open(a.cases)]
    cases = [c for c in cases if re.search(a.filter, "%s %s %s" % (c["scenario"], c["slot"], c["case"]))]
    can_mknod = os.geteuid() == 0
    dropped = [c for c in cases if c.get("check") == "char-device" and not can_mknod]
    cases = [c for c in cases if c not in dropped]
    used, todo, failures = set(), [], []
    for c in cases:
        want, line = expected(rules, c, used)
        if want is None:
            failures.append((c, ["no line of %s matches it" % os.path.basename(a.expect)], "", None))
        else:
            todo.append((c, want, line))
    t0 = time.monotonic()
    times = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.j) as ex:
        futs = {ex.submit(run_case, c, want, a.timeout): (c, want, line) for c, want, line in todo}
        for f in concurrent.futures.as_completed(futs):
            c, want, line = futs[f]
            bad, err, rc, dt = f.result()
            times.append((dt, c))
            if bad:
                failures.append((c, bad + ["(%s line %d)" % (os.path.basename(a.expect), line)], err, rc))
    order = {id(c): i for i, c in enumerate(cases)}
    failures.sort(key=lambda x: order.get(id(x[0]), -1))
    known_failed = [f for f in failures if is_known(f[0])]
    failures = [f for f in failures if not is_known(f[0])]
    failed_ids = {id(f[0]) for f in known_failed}
    fixed = [c for c, _, _ in todo if is_known(c) and id(c) not in failed_ids]
    for c, bad, err, rc in known_failed:
        print("KNOWN %s %s %s: %s" % (c["scenario"], c["slot"], c["case"], "; ".join(bad)))
    for c in fixed:
        print("FIXED %s %s %s: passes now; remove its line from %s" % (
            c["scenario"], c["slot"], c["case"], os.path.basename(a.known)))
    for c, bad, err, rc in failures:
        print("FAIL %s %s %s: %s" % (c["scenario"], c["slot"], c["case"], "; ".join(bad)))
        print("    $ " + " ".join(repr(w) if (not w or " " in w) else w for w in c["argv"]))
        for l in err.splitlines()[:6]:
            print("    | " + l)
    for dt, c in sorted(times, key=lambda x: -x[0])[:a.slowest]:
        print("slow: %.1f s %s %s %s" % (dt, c["scenario"], c["slot"], c["case"]))
    per = {}
    for dt, c in times:
        n, t = per.get(c["scenario"], (0, 0.0))
        per[c["scenario"]] = (n + 1, t + dt)
    print("time: " + ", ".join("%s %d cases %.0f s" % (k, n, t) for k, (n, t) in
                               sorted(per.items(), key=lambda x: -x[1][1])))
    if not a.filter:
        for sc, sl, ca, code, n in rules:
            if n not in used:
                print("note: %s line %d (%s %s %s %d) matches no case" % (
                    os.path.basename(a.expect), n, sc, sl, ca, code))
    tools = sorted({c["tool"] for c in cases})
    print("%d cases over %d programs (%s) in %.0f s%s" % (
        len(cases), len(tools), " ".join(tools), time.monotonic() - t0,
        "; %d char-device cases left out (not root)" % len(dropped) if dropped else ""))
    print("%d cases, %d passed, %d failed, %d known open bugs" % (
        len(cases), len(cases) - len(failures) - len(known_failed), len(failures), len(known_failed)))
    sys.exit(1 if failures or fixed else 0)


if __name__ == "__main__":
    main()
