#!/usr/bin/env bash
# Trains the shipped BottleFit models and the one-stage baselines they are compared with.
#   scripts/train_bottlefit_zoo.sh [ZOO_DIR] [BASELINE_DIR]
# Needs the shipped uncut teachers (entroguard train --recipe uncut --arch A --epochs 5
# --out src/entroguard/zoo_weights/teachers). Resumable: finished checkpoints are kept.
# S1 / S2: epochs of BottleFit's stages (the published recipe runs 10 + 10; the shipped models
# 2 + 2 on two CPU cores); the baselines get the same total, S1 + S2, in one stage.
set -euo pipefail
cd "$(dirname "$0")/.."
zoo=${1:-src/entroguard/zoo_weights}
baselines=${2:-runs/bottlefit-baselines}
S1=${S1:-2}
S2=${S2:-2}
eg=.venv/bin/entroguard
for arch in resnet_s regnet_s mobilenetv2_s; do
    for c in 2 4 8; do
        [ -f "$zoo/$arch-q8-c$c-bottlefit.json" ] || $eg train --recipe bottlefit --arch "$arch" \
            --prior q8 --channels "$c" --stage1-epochs "$S1" --stage2-epochs "$S2" --out "$zoo"
    done
done
[ -f "$zoo/resnet_s-mshp-c16-beta0.04-bottlefit.json" ] || $eg train --recipe bottlefit \
    --arch resnet_s --prior mshp --channels 16 --beta 0.04 --stage1-epochs "$S1" \
    --stage2-epochs "$S2" --out "$zoo"
for arch in resnet_s regnet_s mobilenetv2_s; do  # one stage from scratch, same epoch budget
    [ -f "$baselines/$arch-q8-c4-beta0.json" ] || $eg train --arch "$arch" --prior q8 \
        --channels 4 --beta 0 --epochs $((S1 + S2)) --out "$baselines"
done
