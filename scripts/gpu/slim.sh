#!/usr/bin/env bash
# Keep models/ (the bundled networks, catalogue, comparison photos: more than the 64 MiB a device
# call may carry) from travelling to the GPU machine, which trains from the data chunks and needs none
# of it; then bring it back. Nothing is deleted: the files stay on disk, only git stops listing them.
#   bash scripts/gpu/slim.sh on    # before the device calls
#   bash scripts/gpu/slim.sh off   # after them (before any commit)
#   bash scripts/gpu/slim.sh size  # what would travel now, in MiB
set -euo pipefail
cd "$(dirname "$0")/../.."
EXCLUDE=.git/info/exclude
travelling() {
    { git ls-files -z; git ls-files -z --others --exclude-standard; } | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1
}
case "${1:-size}" in
on)
    git rm -r -q --cached models
    grep -qx '/models/' "$EXCLUDE" 2>/dev/null || echo '/models/' >>"$EXCLUDE"
    ;;
off)
    sed -i '\#^/models/$#d' "$EXCLUDE"
    git reset -q -- models
    git status --short -- models | grep . && { echo "models/ differs from HEAD: check before committing" >&2; exit 1; }
    ;;
size) ;;
*) echo "usage: $0 on|off|size" >&2; exit 2 ;;
esac
echo "travelling: $(( $(travelling) / 1048576 )) MiB (limit 64)"
