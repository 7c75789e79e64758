# The two set-up commands of the README:
#   make demo   install everything into .venv and run the main job on the embedded defaults
#   make test   install everything (+ test tools) into .venv and run the test suite
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-dev demo test
setup:
	bash scripts/install.sh

setup-dev:
	bash scripts/install.sh --dev

demo: setup
	bash scripts/demo.sh

test: setup-dev
	$(PY) -m pytest -ra $(PYTEST_ARGS)
