# `make lab` and `make test` set everything up on a fresh machine, then run the main job or every check.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup vllm-env lab lab-bases demo test docs readme

setup: $(VENV)/.installed

vllm-env: .venv-vllm/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $@

.venv-vllm/.installed: pyproject.toml tools/setup_vllm_env.sh
	bash tools/setup_vllm_env.sh .venv-vllm
	touch $@

lab: setup
	$(BIN)/mixcot run recipes/lab/quick.yaml --jobs 2

lab-bases: setup   # pretrain the quick preset's shipped bases from scratch (about 17 min), compare the bits, ship them
	$(BIN)/python tools/lab_bases.py recipes/lab/quick.yaml --write

demo: setup
	$(BIN)/mixcot grade mixcot_nb/fixtures/shortcot_qwen25_14b_instruct/math500.jsonl --benchmark math500 \
		--label-field score --out runs/demo/grade-qwen2.5-14b-math500
	$(BIN)/mixcot sample recipes/demo/sample.yaml
	$(BIN)/mixcot mix recipes/demo/mix.yaml
	@echo "demo done: graded responses, trace store and the long/short/mix-long datasets are in runs/demo/"

test: setup vllm-env
	PATH="$(abspath $(BIN)):$$PATH" bash tools/check.sh
	bash tools/check_vllm.sh .venv-vllm

docs: setup
	PATH="$(abspath $(BIN)):$$PATH" python tools/docs.py

readme: setup
	$(BIN)/python tools/readme.py
