#!/usr/bin/env bash
# Trains the shipped slimmable heads: one per small architecture and entropy-coded prior.
#   scripts/train_slimmable_zoo.sh [ZOO_DIR]
# Needs the shipped uncut teachers (the tails start from them). Resumable: finished
# checkpoints are kept. EPOCHS: sandwich-rule epochs (2 on two CPU cores, ~10 min a model).
set -euo pipefail
cd "$(dirname "$0")/.."
zoo=${1:-src/entroguard/zoo_weights}
EPOCHS=${EPOCHS:-2}
eg=.venv/bin/entroguard
for prior in mshp fp; do
    for arch in resnet_s regnet_s mobilenetv2_s; do
        [ -f "$zoo/$arch-slim-$prior.json" ] || $eg train --recipe slimmable --arch "$arch" \
            --prior "$prior" --epochs "$EPOCHS" --out "$zoo"
    done
done
