#!/usr/bin/env bash
# Print the real path of a Python interpreter Thingpress can use, or say in one line on stderr what it
# needs and what it found, and exit 1.
#
#   scripts/find-python.sh [--min 3.N] [--for WHAT] [CANDIDATE...]
#
# Candidates are command names or paths, tried in order (default: python3.13 python3.12 python3). A
# pyenv shim that does not run under the user's PYENV_VERSION ("pyenv: python3.13: command not found")
# is replaced by the matching interpreter under `pyenv root`/versions, so PYENV_VERSION is neither
# needed nor changed. The path printed is sys.executable, so later steps do not go through the shim.
set -uo pipefail

# The single place that states the supported versions; tests/template/test_setup.py keeps README and
# pyproject.toml equal to it.
SUPPORTED_MIN=3.12
LAMBDA_RUNTIME=3.13

min=$SUPPORTED_MIN
what="Thingpress"
while [[ $# -gt 0 ]]; do
    case $1 in
        --min) min=$2; shift 2 ;;
        --for) what=$2; shift 2 ;;
        *) break ;;
    esac
done
candidates=("$@")
[[ ${#candidates[@]} -gt 0 ]] || candidates=(python3.13 python3.12 python3)

# "EXECUTABLE VERSION" of a runnable interpreter, nothing otherwise.
probe() {
    "$1" -c 'import sys; print(sys.executable, "%d.%d.%d" % sys.version_info[:3])' 2>/dev/null
}

# Interpreters for NAME (a command or a path): what PATH gives, then pyenv's own copies of that version.
locations() {
    local name=$1 found
    if [[ $name == */* ]]; then
        echo "$name"
        return
    fi
    found=$(command -v "$name" 2>/dev/null) && echo "$found"
    if [[ $name =~ ^python(3\.[0-9]+)$ ]] && command -v pyenv >/dev/null 2>&1; then
        local root
        root=$(pyenv root 2>/dev/null) || return
        # Newest patch release first.
        ls -d "$root"/versions/"${BASH_REMATCH[1]}".*/bin/"$name" 2>/dev/null | sort -rV
    fi
}

at_least() {  # VERSION MIN
    [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1) == "$2" ]]
}

first_seen=""
for candidate in "${candidates[@]}"; do
    while IFS= read -r location; do
        [[ -n $location ]] || continue
        read -r executable version < <(probe "$location") || continue
        [[ -n ${version:-} ]] || continue
        if at_least "$version" "$min"; then
            echo "$executable"
            exit 0
        fi
        [[ -n $first_seen ]] || first_seen="${candidate##*/} $version at $executable"
    done < <(locations "$candidate")
done

if [[ $what == Thingpress ]]; then
    needs="Thingpress needs Python $SUPPORTED_MIN or newer ($LAMBDA_RUNTIME for sam build)"
    fix="Set PYTHON=/path/to/python$LAMBDA_RUNTIME (or python$SUPPORTED_MIN), for example: make demo PYTHON=python$LAMBDA_RUNTIME"
else
    needs="$what needs Python $min, the Lambda runtime"
    fix="Install Python $min (e.g. pyenv install $min) or put python$min on PATH."
fi
echo "${needs}; found ${first_seen:-no working ${candidates[*]}}. $fix" >&2
exit 1
