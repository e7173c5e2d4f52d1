#!/usr/bin/env bash
# Build the warmd .deb from this source tree: packaging/build-deb.sh OUTDIR [--lintian]
#
# debian/ lives in packaging/debian, while the source tree is the repository
# root. This copies the tree (the files git tracks plus untracked ones it does
# not ignore, or everything but build output outside git) into a scratch
# directory, puts packaging/debian there as debian/, runs
# `dpkg-buildpackage -us -uc -b`, and leaves the .deb, .buildinfo and .changes
# in OUTDIR. With --lintian it then runs lintian on the result and fails on
# errors. Needs: dpkg-dev debhelper dh-python pybuild-plugin-pyproject
# python3-all python3-setuptools (and lintian for --lintian).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--lintian]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
out=$1
shift
run_lintian=0
for arg in "$@"; do
    case $arg in
        --lintian) run_lintian=1 ;;
        *) usage ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
for tool in dpkg-buildpackage dh dh_python3; do
    if ! PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$tool" >/dev/null; then
        echo "$0: $tool is missing; on Debian run: apt-get install --no-install-recommends" \
             "dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools" >&2
        exit 69
    fi
done
if [[ $run_lintian == 1 ]] && ! PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v lintian >/dev/null; then
    echo "$0: lintian is missing (apt-get install lintian)" >&2
    exit 69
fi

version=$(sed -n '1s/^warmd (\([^)]*\)).*/\1/p' "$root/packaging/debian/changelog")
mkdir -p "$out"
out=$(cd "$out" && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/warmd-deb.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
src=$scratch/warmd-$version
mkdir "$src"

if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$root" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e $f || -L $f ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$src"
else
    (cd "$root" && tar --exclude=.git --exclude=.venv --exclude=build --exclude=dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache -cf - .) |
        tar -xf - -C "$src"
fi
rm -rf "$src/debian"
cp -a "$src/packaging/debian" "$src/debian"

for needed in systemd/warmd.socket systemd/warmd.service; do
    if [[ ! -f $src/$needed ]]; then
        echo "$0: $needed is missing from the source tree" >&2
        exit 66
    fi
done

# Build with the system's tools and Python only, as a clean build root would:
# a virtual environment or a Python manager on PATH must not supply python3.
(cd "$src" && env -u PYTHONPATH -u PYTHONHOME -u VIRTUAL_ENV -u PYTHONSTARTUP \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b)

shopt -s nullglob
built=("$scratch"/*.deb "$scratch"/*.buildinfo "$scratch"/*.changes)
[[ ${#built[@]} -gt 0 ]] || { echo "$0: dpkg-buildpackage produced nothing" >&2; exit 70; }
cp "${built[@]}" "$out"/
for f in "${built[@]}"; do echo "built $out/$(basename "$f")"; done

if [[ $run_lintian == 1 ]]; then
    changes=("$out"/warmd_"${version}"_*.changes)
    lintian --fail-on error --info --display-info "${changes[0]}"
fi
