#!/usr/bin/env bash
# Trains the shipped slimmable heads: one per small architecture and entropy-coded prior.
#   scripts/train_slimmable_zoo.sh [ZOO_DIR]
# Needs the shipped entropic zoo (the heads start from it). Resumable: finished
# checkpoints are kept. EPOCHS: sandwich-rule epochs (1: ~8 min a model on two CPU cores,
# measurement of the 16 settings included). Each head starts from the zoo model of its
# architecture and prior at beta 0.01.
set -euo pipefail
cd "$(dirname "$0")/.."
zoo=${1:-src/entroguard/zoo_weights}
EPOCHS=${EPOCHS:-1}
eg=.venv/bin/entroguard
for prior in mshp fp; do
    for arch in resnet_s regnet_s mobilenetv2_s; do
        [ -f "$zoo/$arch-slim-$prior.json" ] || $eg train --recipe slimmable --arch "$arch" \
            --prior "$prior" --epochs "$EPOCHS" --out "$zoo"
    done
done
