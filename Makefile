# The two commands: `make demo` (train + evaluate a tiny model on the CPU) and `make test`.
PYTHON ?= python3
VENV := .venv
VENV_OLDEST := .venv-oldest
PY := $(VENV)/bin/python
GEN := generated

.PHONY: demo test test-oldest lint bench venv data clean

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
	TINY_ALBERT_DIR=$(GEN)/tiny-albert $(VENV_OLDEST)/bin/python -m pytest -q tests -m "not newest_stack"

# Benchmarks (not tests): each prints one JSON object on its last line; see bench/RESULTS.md.
bench: venv
	$(PY) bench/data_bench.py --questions 130000
	$(PY) bench/train_bench.py postprocess
	$(PY) bench/train_bench.py eval_traffic
	$(PY) bench/train_bench.py bucketing
	$(PY) bench/train_bench.py train_step

clean:
	rm -rf $(GEN) outputs runs .pytest_cache $(VENV_OLDEST)
