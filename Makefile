# qparse-lite: two commands do all set-up on a fresh machine.
#   make reproduce   the whole reproduction on the quick profile (embedded data, CPU, no download)
#   make test        pytest + nbval over every notebook (quick profile)
# Both make (or reuse) the virtual environment .venv and install what it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: reproduce test venv lint clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qparse-lite)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/qparse reproduce --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:randomly notebooks/

lint: $(STAMP)
	$(VENV)/bin/ruff check qparse_lite tests benchmarks data_scripts notebooks

clean-venv:
	rm -rf $(VENV)
