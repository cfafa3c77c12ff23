#!/usr/bin/env bash
# Build bench/gpu/pack/: what a bare lent GPU machine (Python 3.12, x86-64, torch/transformers/
# peft but no ray, deepspeed or mlflow, no package index) needs to run bench/gpu/check.sh.
#
#   ray-<v>-cp312.tar.xz  the Ray wheel unpacked without ray/jars and ray/rllib (unused) and
#                         re-compressed: the wheel alone (76 MiB) is over the 64 MiB a call carries
#   wheels/               DeepSpeed (built here: no wheel on the index), mlflow-skinny and every
#                         other distribution of the closure that the GPU image lacks
#   data/                 the NCBI-disease test split (generation sentences), from BIOGNER_DATA_DIR
#   MANIFEST.txt          what is in the pack, with sizes
#
# Usage: bench/gpu/pack.sh            (run here, from anywhere; prints the pack's size)
# Then:  device run, carry [bench/gpu/pack], command `bash bench/gpu/check.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."

RAY_VERSION=2.60.0
DEEPSPEED_VERSION=0.19.8
MLFLOW_VERSION=3.17.2
LIMIT_MIB=60
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
PACK=bench/gpu/pack
DATA_DIR=${BIOGNER_DATA_DIR:-../shared/data/bioner}
# Python 3.12 manylinux x86-64 wheels only: the GPU machine's interpreter, not this one's.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3
  --platform manylinux_2_31_x86_64
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux1_x86_64 --platform linux_x86_64 --platform any)

# pip's config here names local mirrors that may be absent: drop its "Location ... ignored" noise.
pip_() { "$PY" -m pip "$@" 2> >(grep -v "WARNING: Location" >&2); }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$PACK"
mkdir -p "$PACK/wheels" "$PACK/data"

echo "== Ray $RAY_VERSION (cp312 wheel, without jars and rllib, as tar.xz)"
pip_ download -q --no-deps "${TARGET[@]}" -d "$work/ray" "ray==$RAY_VERSION"
mkdir -p "$work/ray-site"
"$PY" - "$work/ray" "$work/ray-site" <<'EOF'
import sys, zipfile, pathlib
src, dst = pathlib.Path(sys.argv[1]), sys.argv[2]
(wheel,) = src.glob("ray-*.whl")
with zipfile.ZipFile(wheel) as z:
    keep = [n for n in z.namelist() if not n.startswith(("ray/jars/", "ray/rllib/"))]
    z.extractall(dst, members=keep)
    # zipfile drops the mode bits: restore them, or Ray's gcs_server and raylet cannot start.
    for info in z.infolist():
        mode = (info.external_attr >> 16) & 0o777
        if info.filename in keep and mode and not info.is_dir():
            (pathlib.Path(dst) / info.filename).chmod(mode)
print(f"   {wheel.name}: {wheel.stat().st_size / 2**20:.1f} MiB wheel, {len(keep)} files kept")
EOF
tar -C "$work/ray-site" -cf - . | xz -T2 -6 > "$PACK/ray-$RAY_VERSION-cp312.tar.xz"

echo "== DeepSpeed $DEEPSPEED_VERSION (pure-Python wheel built here; its ops JIT-compile there)"
pip_ wheel -q --no-deps --no-build-isolation -w "$PACK/wheels" \
  "deepspeed==$DEEPSPEED_VERSION"

echo "== the closure of ray[train,data], mlflow-skinny (+ its SQLite store), deepspeed's and biogner's needs, minus the image"
pip_ install -q --dry-run --ignore-installed --report "$work/report.json" \
  --target "$work/resolve" "${TARGET[@]}" \
  "ray[train,data]==$RAY_VERSION" "mlflow-skinny==$MLFLOW_VERSION" \
  hjson "pydantic>=2.7,<3" "PyYAML>=6" "pyarrow>=15" "httpx>=0.27" \
  "sqlalchemy>=2,<3" alembic "llguidance==1.9.1"
"$PY" - "$work/report.json" bench/gpu/image-packages.txt "$work/wanted.txt" <<'EOF'
import json, re, sys
report, image_list, out = sys.argv[1:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
image = {norm(w) for line in open(image_list) if not line.startswith("#") for w in line.split()}
carried = {"ray"}  # ray travels as the tar.xz above
wanted = []
for item in json.load(open(report))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if norm(name) not in image and norm(name) not in carried:
        wanted.append(f"{name}=={version}")
open(out, "w").write("\n".join(sorted(wanted)) + "\n")
print("   carried:", ", ".join(sorted(wanted)))
EOF
pip_ download -q --no-deps "${TARGET[@]}" -d "$PACK/wheels" -r "$work/wanted.txt"

echo "== NCBI-disease test split (generation sentences) from $DATA_DIR"
if [ -f "$DATA_DIR/NCBI-disease/test.tsv" ]; then
  mkdir -p "$PACK/data/NCBI-disease"
  cp "$DATA_DIR/NCBI-disease/test.tsv" "$PACK/data/NCBI-disease/"
else
  echo "   (absent: check.sh will generate on built-in sentences)"
fi

(cd "$PACK" && find . -type f -printf '%s %p\n' | sort -k2) > "$work/manifest"
mv "$work/manifest" "$PACK/MANIFEST.txt"
bytes=$(du -sb "$PACK" | cut -f1)
mib=$(( (bytes + 1048575) / 1048576 ))
echo "pack: $PACK, $(find "$PACK" -type f | wc -l) files, ${mib} MiB ($bytes bytes)"
if [ "$mib" -ge "$LIMIT_MIB" ]; then
  echo "pack is ${mib} MiB, over the ${LIMIT_MIB} MiB budget (a device call carries 64 MiB)" >&2
  exit 1
fi
