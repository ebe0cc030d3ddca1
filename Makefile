# One-command entry points; see README.md.
PYTHON ?= python3
export PYTHON

.PHONY: setup bundle wheel gpu-rehearsal test demo bench bench-camvid clean

setup:
	@bash install/setup.sh

# The offline install bundle (README: "Offline install"; docs/setup.md): on a connected Debian 12
# machine; BUNDLE_ARGS="--python 3.12" adds that Python's compiled wheels, "--cuda" the CUDA ones.
BUNDLE_ARGS ?=
bundle:
	@bash install/setup.sh apt venv sdist
	.venv/bin/python install/bundle.py create --sdist "$$(bash install/setup.sh sdist-path)" $(BUNDLE_ARGS)

# A wheel of the built Caffe in out/wheels/ (docs/gpu.md): FCN_GPU=1 for CUDA 13,
# PYTHON=python3.12 for another Python (with the offline bundle's Boost sources).
wheel:
	@bash install/wheel.sh

# The GPU check rehearsed here as a lent GPU machine will run it (docs/gpu.md): the CUDA
# wheels for Python 3.12 and the check's data in out/gpu-pack, then the device command in
# a copy of what travels, with no network and the CPU standing in for the GPU. The last
# line names the carried path and the device command. REHEARSAL_ARGS="--no-cudnn": the
# CUDA wheel only.
REHEARSAL_ARGS ?=
gpu-rehearsal: setup
	.venv/bin/python scripts/gpu_rehearsal.py $(REHEARSAL_ARGS)

test: setup
	.venv/bin/python -m pytest tests

# make demo DEMO_ITERS=N: fine-tune for N iterations instead of 2000 (scored every 500,
# and at the end); DEMO_ARGS="--gpu 0" (or --cpu) chooses the device.
DEMO_ITERS ?= 2000
DEMO_ARGS ?=
demo: setup
	.venv/bin/python scripts/demo.py --iters $(DEMO_ITERS) $(DEMO_ARGS)

# Benchmarks (not tests): speed against PyTorch, onnxruntime and OpenVINO, outputs against
# the first build, make demo's iteration against DEMO_BASELINE (the build before issue 33's
# speed work; built once into the cache), and the CamVid training comparison (three runs
# of CAMVID_MINUTES each).
DEMO_BASELINE ?= 499944f
bench: setup
	.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements-bench.txt
	.venv/bin/python bench/speed.py
	.venv/bin/python bench/outputs_unchanged.py
	.venv/bin/python bench/demo_speed.py --baseline-rev $(DEMO_BASELINE)

CAMVID_MINUTES ?= 12
bench-camvid: setup
	.venv/bin/python bench/camvid.py --minutes $(CAMVID_MINUTES)

# Removes what setup put in the repo; the build cache stays (docs/setup.md: "Removing it").
clean:
	rm -rf .venv out .pytest_cache
