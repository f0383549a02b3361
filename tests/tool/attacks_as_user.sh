#!/usr/bin/env bash
# Run the attack suite (and the sandbox's own tests) as an ordinary user, from a root shell.
#   bash tests/tool/attacks_as_user.sh [pytest arguments]
# The user is a throw-away uid (default 65534, nobody; AGENT_TEST_UID to change it) with a HOME
# and a TMPDIR of its own. It must be able to read the checkout, the venv and the interpreter the
# venv points to: when it cannot, the folders on the way are named, and with CI=1 they get o+x
# (traversal only, never read) so a fresh CI container can run it.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="$root/.venv/bin/python"
uid="${AGENT_TEST_UID:-65534}"
[ "$(id -u)" -eq 0 ] || { echo "attacks_as_user: run it as root (it switches to uid $uid)" >&2; exit 2; }
command -v setpriv >/dev/null || { echo "attacks_as_user: setpriv (util-linux) is missing" >&2; exit 2; }
as_user() { setpriv --reuid="$uid" --regid="$uid" --clear-groups --inh-caps=-all -- "$@"; }

# through a shell: setpriv's own exec may resolve a path the user could not (a venv into /root)
if ! as_user sh -c '"$0" -c "import core.sandbox"' "$py" 2>/dev/null; then
    blocked=()
    for path in "$root" "$(readlink -f "$py")"; do
        dir="$path"
        while [ "$dir" != "/" ]; do
            dir="$(dirname "$dir")"
            perms="$(stat -c %A "$dir")"
            [ "${perms:9:1}" = "x" ] || [ "${perms:9:1}" = "t" ] || blocked+=("$dir")
        done
    done
    if [ ${#blocked[@]} -eq 0 ] || [ "${CI:-}" = "" ]; then
        echo "attacks_as_user: uid $uid cannot run $py; folders it cannot enter: ${blocked[*]:-none found}" >&2
        echo "attacks_as_user: with CI=1 they get o+x (enter, not list)" >&2
        exit 1
    fi
    for dir in $(printf '%s\n' "${blocked[@]}" | sort -u); do
        echo "attacks_as_user: chmod o+x $dir (CI=1)"
        chmod o+x "$dir"
    done
fi

work="$(mktemp -d /tmp/attacks-as-user.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/home" "$work/tmp"
chown -R "$uid:$uid" "$work/home" "$work/tmp"
chmod 755 "$work"
cd "$root" || exit 2
as_user env HOME="$work/home" TMPDIR="$work/tmp" PYTHONDONTWRITEBYTECODE=1 \
    "$py" -m pytest -q -p no:cacheprovider --basetemp="$work/tmp/pytest" \
    tests/tool/test_attacks.py tests/core/test_sandbox.py tests/core/test_paths.py "$@"
