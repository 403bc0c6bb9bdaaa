#!/usr/bin/env bash
# Download scripts for real users: usage errors, and (when offline, as CI and the dev
# machines are) one clear error line, exit 4, nothing left in the destination.
source "$(dirname "$0")/lib.sh"
expect_rc 2 "$FEDSM_ROOT/data/get-cifar.sh" cifar7 && expect_one_error_line
expect_rc 0 "$FEDSM_ROOT/data/get-cifar.sh" --help
if timeout 5 getent hosts www.cs.toronto.edu >/dev/null 2>&1; then
    echo "online: the offline check is skipped (a real download is not a test)"
else
    expect_rc 4 timeout 60 "$FEDSM_ROOT/data/get-cifar.sh" cifar10 "$T/dl" && expect_one_error_line
    [ -z "$(ls -A "$T/dl" 2>/dev/null)" ] || fail "the failed download left files: $(ls -A "$T/dl")"
fi
done_tests
