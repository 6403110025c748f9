# Quick start: `make demo` (set up + classify and detect examples/, detect and track objects in a clip made from
# them) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Flower (cvapps federated) in its own venv: flwr's pins cannot join cvapps's (cvapps/federated/engine.py)
FLOWER_STAMP := .venv-flower/.installed

.PHONY: setup demo test test-isa docs bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,onnx,openvino,litert,coreml,serve,label-studio,cvat,s3,ray,ssl]"
	$(BIN)/pip install -q -c constraints.txt --no-deps lightly  # cvapps pretrain (see pyproject's ssl extra)
	touch $(STAMP)

$(FLOWER_STAMP): $(STAMP) cvapps/federated/flower-constraints.txt
	$(BIN)/cvapps federated setup --venv .venv-flower
	touch $(FLOWER_STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/cvapps weights pull mobilenet_v2.imagenet1k
	$(BIN)/cvapps predict classify examples/ --out runs/demo/classify --save-json runs/demo/classify/predictions.jsonl
	$(BIN)/cvapps weights pull ssd_mobilenet_v2.coco
	$(BIN)/python examples/make_clip.py runs/demo/clip.mp4
	$(BIN)/cvapps predict detect examples/ runs/demo/clip.mp4 --out runs/demo/detect --save-json runs/demo/detect/predictions.jsonl
	$(BIN)/cvapps track runs/demo/clip.mp4 --out runs/demo/track --save-json runs/demo/track/tracks.jsonl
	$(BIN)/cvapps predict pose examples/astronaut.jpg --out runs/demo/pose --save-json runs/demo/pose/predictions.jsonl
	$(BIN)/cvapps predict landmarks examples/astronaut.jpg --out runs/demo/faces --save-json runs/demo/faces/predictions.jsonl

test: $(STAMP) $(FLOWER_STAMP)
	$(BIN)/python -m pytest --durations=25

# the rounding-sensitive tests (conftest.ROUNDING_SENSITIVE) again under oneDNN's SSE4.1 kernels on one
# thread: CPUs round differently (AMX, AVX-512, AVX2), and a test that passes only by a near-tie fails here
test-isa: $(STAMP)
	ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m isa

# the documentation site, offline, into site/ (every warning is an error)
docs: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/classify_speed.py
	$(BIN)/python benchmarks/finetune_hymenoptera.py

clean:
	rm -rf $(VENV) .venv-flower runs build site *.egg-info
