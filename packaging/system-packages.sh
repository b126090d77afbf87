#!/usr/bin/env bash
# System packages the Python environment cannot bring: bubblewrap, the sandbox of the agent's opt-in python tool
# (internlocal/agent/sandbox.py). Installed with apt where we are root (CI, containers); elsewhere the command to
# run is printed and the tool falls back to its weaker guard, saying so when python is enabled.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing bubblewrap (the python tool's sandbox)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq bubblewrap; }
    exit 0
fi
echo "note: bubblewrap is not installed; the agent's python tool will use its weaker guard." \
     "Install it for the real sandbox: sudo apt install bubblewrap (Fedora: sudo dnf install bubblewrap)" >&2
