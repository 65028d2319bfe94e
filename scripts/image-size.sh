#!/usr/bin/env bash
# The image's size without a Docker engine: the runtime stage of
# deploy/Dockerfile built as a plain directory — Debian bookworm (debootstrap
# minbase, without the docs, man pages and locales that debian:bookworm-slim
# leaves out), ca-certificates, the release binary and config/default.toml —
# then measured unpacked and as one gzip'd layer (what a registry stores).
# An estimate: `make image` and `docker image ls` give the exact figure.
# Needs root, debootstrap and Debian's mirror; builds under a temporary
# directory and removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/h5pay-worker}"
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 2; }
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates bookworm "$root" http://deb.debian.org/debian >/dev/null
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
base=$(du -sb "$root" | cut -f1)
install -m 0755 "$bin" "$root/usr/local/bin/h5pay-worker"
install -D -m 0644 config/default.toml "$root/etc/h5pay/default.toml"
total=$(du -sb "$root" | cut -f1)
gz=$(tar -C "$root" -cf - . | gzip -6 | wc -c)
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
echo "base (bookworm, slimmed, with ca-certificates): $(mb "$base")"
echo "image, unpacked: $(mb "$total") (the binary: $(mb "$(stat -c %s "$bin")"))"
echo "image, gzip'd as a registry stores it: $(mb "$gz")"
