# The two commands: `make demo` (train + evaluate a tiny model on the CPU) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GEN := generated

.PHONY: demo test bench venv data clean

$(VENV)/installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/installed

$(GEN)/tiny-albert/config.json: tools/make_tiny_model.py tools/make_squad_data.py $(VENV)/installed
	$(PY) tools/make_tiny_model.py $(GEN)/tiny-albert

$(GEN)/squad/train-v2.0.json: tools/make_squad_data.py $(VENV)/installed
	$(PY) tools/make_squad_data.py $(GEN)/squad

data: $(GEN)/tiny-albert/config.json $(GEN)/squad/train-v2.0.json

demo: data
	$(PY) model_def.py --config configs/local_tiny.yaml --output-dir outputs/demo

test: data
	$(PY) -m pytest -q tests

# Benchmarks (not tests): each prints one JSON object on its last line; see bench/RESULTS.md.
bench: venv
	$(PY) bench/data_bench.py --questions 130000
	$(PY) bench/train_bench.py postprocess
	$(PY) bench/train_bench.py bucketing
	$(PY) bench/train_bench.py train_step

clean:
	rm -rf $(GEN) outputs runs .pytest_cache
