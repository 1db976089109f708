#!/usr/bin/env bash
# Prepares what a GPU machine of the device tool lacks, in .whl/ (git-ignored; carried with `carry: [".whl"]`):
# the wheels of albumentations, torchsummary, the Jupyter kernel and airbench for its Python 3.12 (without the packages its
# image already has: KINDS.md of the device tool), and the offline CIFAR-10 copy.
#   bash benchmarks/gpu_wheels.sh [path/to/cifar10-jpeg.tar.gz]
# On the GPU machine, first:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   tar -xzf .whl/cifar10-jpeg.tar.gz -C /tmp
set -euo pipefail
cd "$(dirname "$0")/.."
archive=${1:-../shared/data/cifar10-jpeg.tar.gz}
rm -rf .whl && mkdir .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux1_x86_64 --platform any -d .whl \
    albumentations==2.0.8 torchsummary==1.5.1 nbclient nbformat ipykernel ipywidgets
python3 -m pip wheel -q --no-deps -w .whl airbench==0.1.8  # benchmarks/calibration.py's reference, pure Python
# already on the GPU image (same or compatible versions); carrying them would shadow its own builds
for have in numpy scipy opencv_python_headless PyYAML pyyaml Pygments pygments packaging psutil six python_dateutil \
        typing_extensions attrs pillow matplotlib jinja2 MarkupSafe markupsafe setuptools; do
    rm -f .whl/"$have"-*.whl
done
cp "$archive" .whl/
du -sh .whl
