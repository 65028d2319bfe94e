#!/usr/bin/env bash
# The last line of `make test`: every check that could not run on this
# machine, in one list (tests and scripts append to $H5PAY_SKIPS as they
# skip; README, "What a fresh machine needs", says which tool each needs).
set -u
f=${H5PAY_SKIPS:-}
if [ -n "$f" ] && [ -s "$f" ]; then
  n=$(sort -u "$f" | wc -l)
  echo "make test: passed, but $n check(s) could not run on this machine:"
  sort -u "$f" | sed 's/^/  - /'
else
  echo "make test: passed; every check ran"
fi
