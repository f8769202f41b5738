# The two commands: `make demo` (train + evaluate a tiny model on the CPU) and `make test`.
PYTHON ?= python3
VENV := .venv
VENV_OLDEST := .venv-oldest
VENV_IMAGE := .venv-image
IMAGE := tests/image
PY := $(VENV)/bin/python
GEN := generated

.PHONY: demo test test-oldest test-image lint bench venv data clean

$(VENV)/installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $@

# The oldest supported stack (torch 2.3.1, transformers 4.57, NumPy 1): its CUDA wheels come from
# PyPI (about 2.5 GB, 2 minutes here) and import without a GPU.
$(VENV_OLDEST)/installed: requirements-oldest.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV_OLDEST)
	$(VENV_OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_OLDEST)/bin/python -m pip install --quiet -r requirements-oldest.txt -r requirements-dev.txt
	touch $@

# A stand-in for the cluster's default task image, built from nothing (tests/image/requirements.txt
# says how it differs). The image test never changes it: each "container" is a layer over it.
# deepspeed's sdist imports torch to build, so it goes in last, without build isolation.
$(VENV_IMAGE)/installed: $(IMAGE)/requirements.txt $(IMAGE)/requirements-deepspeed.txt
	rm -rf $(VENV_IMAGE)
	$(PYTHON) -m venv $(VENV_IMAGE)
	$(VENV_IMAGE)/bin/python -m pip install --quiet -r $(IMAGE)/requirements.txt
	$(VENV_IMAGE)/bin/python -m pip install --quiet --no-build-isolation -r $(IMAGE)/requirements-deepspeed.txt
	touch $@

venv: $(VENV)/installed

$(GEN)/tiny-albert/config.json: tools/make_tiny_model.py tools/make_squad_data.py $(VENV)/installed
	$(PY) tools/make_tiny_model.py $(GEN)/tiny-albert

$(GEN)/squad/train-v2.0.json: tools/make_squad_data.py $(VENV)/installed
	$(PY) tools/make_squad_data.py $(GEN)/squad

data: $(GEN)/tiny-albert/config.json $(GEN)/squad/train-v2.0.json

demo: data
	$(PY) model_def.py --config configs/local_tiny.yaml --output-dir outputs/demo

# Lint and formatting first (ruff.toml), then the suite.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: data lint
	$(PY) -m pytest -q tests

# The suite on the oldest supported stack (CI runs it after `make test`). The fixture model comes
# from the newest stack: make_tiny_model.py's default tokenizer is built with transformers 5.
test-oldest: data $(VENV_OLDEST)/installed
	TINY_ALBERT_DIR=$(GEN)/tiny-albert $(VENV_OLDEST)/bin/python -m pytest -q tests -m "not newest_stack and not slow"

# startup-hook.sh in that image, sourced as Determined sources it: offline from a wheelhouse made
# with `task_image.py wheels` (network cut with unshare -n where allowed) then a run to metrics,
# and from PyPI; both must only add packages. CI runs it after `make test-oldest`.
test-image: data $(VENV_IMAGE)/installed
	IMAGE_VENV=$(VENV_IMAGE) TINY_ALBERT_DIR=$(GEN)/tiny-albert $(PY) -m pytest -q -s tests/cluster/test_image.py

# Benchmarks (not tests): each prints one JSON object on its last line; see bench/RESULTS.md.
bench: venv
	$(PY) bench/data_bench.py --questions 130000
	$(PY) bench/startup_bench.py --questions 100000 --processes 8
	$(PY) bench/train_bench.py validation_batch --config configs/const.yaml
	$(PY) bench/train_bench.py postprocess
	$(PY) bench/train_bench.py eval_traffic
	$(PY) bench/train_bench.py bucketing
	$(PY) bench/train_bench.py train_step

clean:
	rm -rf $(GEN) outputs runs .pytest_cache $(VENV_OLDEST) $(VENV_IMAGE)
