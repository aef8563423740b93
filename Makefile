# qparse-lite: two commands do all set-up on a fresh machine.
#   make reproduce   the whole reproduction on the quick profile (embedded data, CPU, no download)
#   make test        pytest + nbval over every notebook (quick profile) + the book built and browser-tested
#   make book        the static HTML book (README, docs/paper.md, the executed chapters) in build/book/html
# Both make (or reuse) the virtual environment .venv and install what it needs.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= quick
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed

.PHONY: reproduce test venv lint clean-venv book book-check chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[notebooks,dev,book]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (qparse-lite)" >/dev/null
	touch $(STAMP)

venv: $(STAMP)

reproduce: $(STAMP)
	$(VENV)/bin/qparse reproduce --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m pytest -q --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:randomly notebooks/
	$(MAKE) --no-print-directory book-check

# The book is built offline from the committed executed chapters (nothing runs); see data_scripts/build_book.py.
book: $(STAMP)
	$(PY) data_scripts/build_book.py build/book

# Debian's chromium for the browser test, installed with apt when absent (as root: CI and this project's machines).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Every page of the book in headless chromium: links, images, MathJax, nothing fetched from outside; 2 screenshots.
book-check: book chromium
	$(PY) data_scripts/check_book.py build/book/html --screenshots build/book/screenshots

lint: $(STAMP)
	$(VENV)/bin/ruff check qparse_lite tests benchmarks data_scripts notebooks

clean-venv:
	rm -rf $(VENV)
