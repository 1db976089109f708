#!/usr/bin/env bash
# The GPU measurements of RESULTS.md, in one go on a CUDA machine:
#   bash benchmarks/gpu.sh DATA_DIR OUT_DIR STEP...
# STEP: check    (run first on any new GPU, <= 10 min: benchmarks/gpu_check.py, one PASS/FAIL line per check)
#       notebook (execute S11_ResNet18.ipynb top to bottom;
#                 the full 20-epoch run, seed 0, figures and the executed notebook to OUT_DIR/plots)
#       fp16     (Colab's T4 path forced on this GPU: --precision fp16, seeds 0-2; then seed 0 in bf16 beside it)
#       calibration (airbench94 x 10 seeds and airbench96 x 3 on the copy: benchmarks/calibration.py; ~4 min on an H100)
#       faithfulness (GradCAM checks per layer on 1,000 test images of the notebook run: run after `notebook`)
#       recipes1, recipes2 (the variants of benchmarks/recipe_sweep.txt, seeds 0-2 each, one run at a time:
#                 the first two lines, then the rest; not yet timed at batch 128)
#       lines    (the recipe lines to settle the default, all at once: the lines of recipe_sweep.txt named in
#                 $LINES, default "recipe ls0.2", seeds 0-2 each; final accuracy per seed and mean)
#       shortruns (the warm-up rule on short runs: 1 and 2 epochs of all the data, 3 epochs of 5,000 images; seeds 0
#                 and 1; with the rule and without it (--min-warmup-steps 1), the two side by side; ~3 min)
#       seeds    (seeds 1 and 2 through the CLI, one after the other)
#       bench    (benchmarks/benchmark.py with all cores, then limited to 2 cores)
#       sweep    (the recipe search of benchmarks/sweep.txt, all runs at once)
# Each step logs to OUT_DIR/<step>.log; a failing step does not stop the others.
set -u
data=$1 out=$2
shift 2
mkdir -p "$out"
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1

notebook() {
    mkdir -p "$out/plots"
    S11_DATA_DIR=$data S11_OUT_DIR=$out/run_nb S11_PLOTS_DIR=$out/plots S11_PROGRESS=epoch python3 - <<'EOF'
import os
import nbclient, nbformat
nb = nbformat.read("S11_ResNet18.ipynb", as_version=4)
nbclient.NotebookClient(nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": "."}}).execute()
nbformat.write(nb, os.path.join(os.environ["S11_PLOTS_DIR"], "S11_ResNet18.ipynb"))
EOF
}
check() { python3 benchmarks/gpu_check.py --data-dir "$data" --out "$out/check"; }
seeds() {
    for s in 1 2; do
        python3 -m PyTorch_Vision train --data-dir "$data" --seed $s --out "$out/seed$s" --progress epoch \
            > "$out/seed$s.log" 2>&1
    done
    tail -n 8 "$out"/seed1.log "$out"/seed2.log
}
fp16() {
    for s in 0 1 2; do
        python3 -m PyTorch_Vision train --data-dir "$data" --seed $s --precision fp16 --out "$out/fp16_seed$s" \
            --progress epoch > "$out/fp16_seed$s.log" 2>&1
    done
    python3 -m PyTorch_Vision train --data-dir "$data" --seed 0 --out "$out/bf16_seed0" --progress epoch \
        > "$out/bf16_seed0.log" 2>&1
    grep -H "precision\|final test accuracy\|total training time" "$out"/fp16_seed*.log "$out"/bf16_seed0.log
}
calibration() {
    python3 benchmarks/calibration.py export --data-dir "$data" --out "$out/calib"
    python3 benchmarks/calibration.py run --dir "$out/calib" --seeds94 10 --seeds96 3
    cp benchmarks/calibration.json "$out/"
    rm -f "$out"/calib/cifar10/*.pt
}
faithfulness() {
    python3 benchmarks/faithfulness.py --checkpoint "$out/run_nb/recipe/checkpoint.pt" --data-dir "$data" \
        --out "$out/faithfulness"
}
recipes() {  # recipes FIRST LAST: the lines FIRST..LAST of benchmarks/recipe_sweep.txt, 3 seeds each
    sed -n "$1,$2p" benchmarks/recipe_sweep.txt | while read -r name args; do
        for s in 0 1 2; do
            python3 -m PyTorch_Vision train --data-dir "$data" --seed $s --out "$out/recipes/${name}_seed$s" \
                --progress epoch $args > "$out/recipes_${name}_seed$s.log" 2>&1 < /dev/null
            echo "$name seed $s: $(grep 'final test accuracy' "$out/recipes_${name}_seed$s.log")"
        done
    done
}
shortruns() {
    for w in 100 1; do
        for args in "--epochs 1" "--epochs 2" "--epochs 3 --limit-train 5000"; do
            for s in 0 1; do
                name="$(echo "$args" | tr -d ' -')_w${w}_seed$s"
                python3 -m PyTorch_Vision train --data-dir "$data" --seed $s --min-warmup-steps $w $args \
                    --out "$out/shortruns/$name" --progress epoch > "$out/shortruns_$name.log" 2>&1 < /dev/null
                echo "$name: $(grep 'final test accuracy' "$out/shortruns_$name.log")"
            done
        done &
    done
    wait
}
recipes1() { recipes 1 2; }
recipes2() { recipes 3 '$'; }
lines() {  # side by side on one GPU, so their times are shared, not reported
    local names=${LINES:-recipe ls0.2} name
    for name in $names; do  # every name checked before any run starts
        grep -q "^$name\( \|$\)" benchmarks/recipe_sweep.txt \
            || { echo "no line $name in benchmarks/recipe_sweep.txt"; return 1; }
    done
    for name in $names; do
        args=$(awk -v n="$name" '$1 == n {$1 = ""; print}' benchmarks/recipe_sweep.txt)
        for s in 0 1 2; do
            python3 -m PyTorch_Vision train --data-dir "$data" --seed $s --out "$out/lines/${name}_seed$s" \
                --progress epoch $args > "$out/lines_${name}_seed$s.log" 2>&1 < /dev/null &
        done
    done
    wait
    python3 - "$out/lines" <<'EOF'
import json, statistics, sys
from pathlib import Path
finals = {}
for run in sorted(Path(sys.argv[1]).glob("*_seed*/history.json")):
    finals.setdefault(run.parent.name.rsplit("_seed", 1)[0], []).append(json.loads(run.read_text())["test_acc"][-1])
for name, accs in finals.items():
    spread = f", std {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    print(f"{name}: {', '.join(f'{a:.2f}' for a in accs)} -> mean {statistics.mean(accs):.2f}{spread}")
EOF
}
bench() {
    python3 benchmarks/benchmark.py --steps 50 --warmup 5 --data-dir "$data"
    python3 benchmarks/benchmark.py --steps 50 --warmup 5 --data-dir "$data" --cores 2 --skip-plain
}
sweep() {  # the recipe search: 20-epoch runs side by side (eager: their times are shared, not reported)
    while read -r name args; do
        python3 -m PyTorch_Vision train --data-dir "$data" --out "$out/sweep/$name" --progress epoch \
            $args > "$out/sweep_$name.log" 2>&1 &
    done < benchmarks/sweep.txt
    wait
    for f in "$out"/sweep_*.log; do echo "$f: $(grep 'final test accuracy' "$f")"; done
}

for step in "$@"; do
    echo "== $step $(date -u +%T)"
    start=$SECONDS
    "$step" > "$out/$step.log" 2>&1
    echo "== $step rc=$? in $((SECONDS - start)) s"
    tail -n 25 "$out/$step.log"
done
