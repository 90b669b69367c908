#!/usr/bin/env bash
# Install improvcap into ./.venv with the system packages it needs (Debian/Ubuntu).
#   PortAudio (sounddevice), FFmpeg's ffprobe (tests check written files with it), PulseAudio and the ALSA
#   plugins (the tests' stand-in microphone), libGL/GLib (opencv-python), libfaketime (the demo LSL sender's
#   drifting clock), libltc (LTC timecode read from, and by the demo written to, an audio channel).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libportaudio2 ffmpeg pulseaudio pulseaudio-utils libasound2-plugins libgl1 libglib2.0-0 libfaketime libltc11 python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
echo "improvcap installed in .venv (run .venv/bin/improvcap)"
