# Quick start: `make demo` (set up + classify examples/) and `make test` (set up + test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,onnx]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cvapps weights pull mobilenet_v2.imagenet1k
	$(BIN)/cvapps predict classify examples/ --out runs/demo --save-json runs/demo/predictions.jsonl

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/classify_speed.py
	$(BIN)/python benchmarks/finetune_hymenoptera.py

clean:
	rm -rf $(VENV) runs build *.egg-info
