#!/usr/bin/env bash
# The zero-shot and few-shot figures of the README, reproduced end to end on the shared samples:
# pretrain on the PTB-XL sample's train split with five diagnoses held out, evaluate zero-shot on
# its val split (knowledge views vs bare names, seen vs unseen labels), cross-dataset on CinC 2021,
# then few-shot (1%, 10%, 100% of train; linear probe and full fine-tune).
#
#   bash bench/zero_shot_experiments.sh [OUT] [ENCODER] [EPOCHS] [LR] [FEW_SHOT: yes|no]
set -euo pipefail
DATA=${KED_SHARED_DATA:-$(cd "$(dirname "$0")/../.." && pwd)/shared/data}
OUT=${1:-runs/zero-shot}
ENCODER=${2:-xresnet1d_small}
EPOCHS=${3:-40}
LR=${4:-3e-3}
FEW_SHOT=${5:-yes}
PTBXL="ptbxl-array:$DATA/ptbxl_sample"
export KED_DB="$OUT/ked.duckdb"
mkdir -p "$OUT"

ked knowledge import-pack
ked pretrain --data "$PTBXL" --vocab ptbxl --view full --encoder "$ENCODER" \
  --epochs "$EPOCHS" --batch-size 64 --lr "$LR" \
  --holdout SCP:AFIB --holdout SCP:CLBBB --holdout SCP:CRBBB --holdout SCP:SBRAD --holdout SCP:STACH \
  --out "$OUT/pretrain"
ked eval --checkpoint "$OUT/pretrain" --data "$PTBXL" --vocab ptbxl --split val --out "$OUT/eval-ptbxl"
ked eval --checkpoint "$OUT/pretrain" --data "cinc2021:$DATA/cinc2021" --vocab cinc2021 --split all \
  --out "$OUT/eval-cinc2021"
[ "$FEW_SHOT" = yes ] || exit 0
for mode in linear full; do
  for fraction in 0.01 0.1 1.0; do
    ked finetune --checkpoint "$OUT/pretrain" --data "$PTBXL" --vocab ptbxl --mode "$mode" \
      --fraction "$fraction" --epochs 30 --lr 1e-3 --out "$OUT/finetune-$mode-$fraction"
    ked eval --checkpoint "$OUT/finetune-$mode-$fraction" --data "$PTBXL" --vocab ptbxl --split val \
      --no-ablation --out "$OUT/eval-finetune-$mode-$fraction"
  done
done
