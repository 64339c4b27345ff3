#!/usr/bin/env bash
# Runs one phase of `make test` and prints how long it took, so a slow CI run says where
# its time went.
set -uo pipefail
name=$1; shift
start=$(date +%s)
echo "=== phase $name: $*"
"$@"
rc=$?
echo "=== phase $name: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $(( $(date +%s) - start ))s"
exit $rc
