#!/usr/bin/env bash
# Build what an emulated aarch64 device needs to run edgeopt artifacts (no torch, no TVM compiler):
#   <build>/sysroot                       arm64 CPython 3.11 from Debian .debs (unpacked, host dpkg untouched)
#   <build>/dev-site                      aarch64 wheels: numpy, apache-tvm-ffi (the project pin)
#   <build>/dev-tvmrt/libtvm_runtime.so   from the aarch64 apache-tvm wheel
# Usage: scripts/arm_sysroot.sh [build-dir]   (default $EDGEOPT_ARM_SYSROOT, else build/arm64 here; git-ignored)
# Idempotent: a stamp holding the versions makes a second run exit at once. Installs the cross gcc, the arm64
# libc dev files and qemu-user with apt when they are missing (needs root). Recipe: shared/notes/target-arm.md §10.
set -euo pipefail
REPO=$(realpath "$(dirname "$0")/..")
W=$(realpath -m "${1:-${EDGEOPT_ARM_SYSROOT:-$REPO/build/arm64}}")
cd "$REPO"
PY=${HOST_PY:-.venv/bin/python}
A=$W/apt
FFI=$("$PY" -c "import importlib.metadata as m; print(m.version('apache-tvm-ffi'))")  # the device gets the host pin
TVM=0.27.0.post1
NP=${DEV_NUMPY:-2.4.6}  # the device is CPython 3.11: numpy >= 2.5 has no cp311 wheel
KEY="bookworm py3.11 tvm$TVM ffi$FFI np$NP"
mkdir -p "$W"; exec 9>"$W/.lock"; flock 9  # concurrent callers (e.g. pytest -n 2 workers) wait for one build
[ "$(cat "$W/.stamp" 2>/dev/null)" = "$KEY" ] && { echo "arm64 sysroot cached in $W"; exit 0; }
t() { echo "[$(date +%T)] $*"; }

t "1. host tools: cross gcc, arm64 libc dev files (crti.o), user-mode qemu"
PKGS=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
dpkg -s "${PKGS[@]}" >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null; }

t "2. arm64 sysroot from Debian .debs (private apt state)"
mkdir -p "$A"/{state/lists/partial,cache/archives/partial,etc/apt.conf.d,etc/preferences.d,etc/sources.list.d}
sources() {  # the machine's Debian sources, restricted to arm64 (reads the host's Release files)
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 'Origin: Debian' |
    sort -u | while read -r uri rel comp; do
      echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $rel $comp"; done
}
sources >"$A/etc/sources.list"
[ -s "$A/etc/sources.list" ] || { apt-get update -qq; sources >"$A/etc/sources.list"; }
[ -s "$A/etc/sources.list" ] || { echo "arm_sysroot.sh: no Debian apt source found" >&2; exit 1; }
cat >"$A/apt.conf" <<CONF
APT::Architecture "arm64"; APT::Architectures { "arm64"; };
Dir::State "$A/state"; Dir::State::status "$A/state/status"; Dir::Cache "$A/cache";
Dir::Etc "$A/etc"; Dir::Etc::SourceList "$A/etc/sources.list"; Dir::Etc::SourceParts "$A/etc/sources.list.d";
Dir::Etc::Parts "$A/etc/apt.conf.d"; Dir::Etc::PreferencesParts "$A/etc/preferences.d";
APT::Install-Recommends "false"; Acquire::Languages "none"; Acquire::GzipIndexes "true";
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
CONF
: >"$A/state/status"  # empty status: apt resolves the whole dependency closure
APT_CONFIG=$A/apt.conf apt-get update -qq
APT_CONFIG=$A/apt.conf apt-get install -y -qq -d python3.11 libstdc++6 >/dev/null  # -d: download only
rm -rf "$W/sysroot"
for d in "$A"/cache/archives/*.deb; do dpkg-deb -x "$d" "$W/sysroot"; done

t "3. aarch64 wheels (host pip); libtvm_runtime.so out of the aarch64 apache-tvm wheel"
PIPA=(--disable-pip-version-check --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11
      --implementation cp --abi cp311)
rm -rf "$W/dev-site" "$W/whl"
"$PY" -m pip install -q --target "$W/dev-site" "${PIPA[@]}" "apache-tvm-ffi==$FFI" "numpy==$NP"
"$PY" -m pip download -q --no-deps -d "$W/whl" "${PIPA[@]}" "apache-tvm==$TVM"
mkdir -p "$W/dev-tvmrt"
unzip -q -j -o "$W"/whl/apache_tvm-"$TVM"-*aarch64*.whl tvm/lib/libtvm_runtime.so -d "$W/dev-tvmrt"
rm -rf "$W/whl"  # 95 MB, of which only libtvm_runtime.so is needed

t "4. smoke test under an emulated Cortex-A72"
qemu-aarch64 -cpu cortex-a72 -L "$W/sysroot" -E PYTHONPATH="$W/dev-site" "$W/sysroot/usr/bin/python3.11" -c \
  "import ctypes, platform, numpy, tvm_ffi; ctypes.CDLL('$W/dev-tvmrt/libtvm_runtime.so', mode=ctypes.RTLD_GLOBAL)
print(platform.machine(), 'numpy', numpy.__version__, 'tvm_ffi', tvm_ffi.__version__)"
echo "$KEY" >"$W/.stamp"
t "done: $(du -sh "$W" | cut -f1) in $W"
