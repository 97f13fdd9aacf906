# The two commands (see README):  make reproduce   and   make test
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
SEEDS   ?= 1
THREADS ?=

.PHONY: install reproduce test check-sync export clean-nbs format bench docs

# installs again only when pyproject.toml or constraints.txt change in content (nbdev-export rewrites
# pyproject.toml unchanged, so a timestamp would reinstall after every export)
STAMP = $(VENV)/.installed
install:
	@want=$$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$want" ]; then \
	  set -ex; \
	  python3 -m venv $(VENV); \
	  $(PIP) install -q -c constraints.txt -e ".[dev,bench]"; \
	  $(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null; \
	  HF_HUB_OFFLINE=1 $(PY) -c "from semclip.figures import warm_umap_cache as w; print(f'UMAP compiled and cached in {w():.0f} s')"; \
	  echo "$$want" > $(STAMP); \
	fi

# main job: the reproduction on the embedded SynthNeg dataset, offline, on CPU; tables and figures in
# $SEMCLIP_RUNS/synthneg/figures (default runs/synthneg/figures), compared with the committed figures/synthneg;
# THREADS=1 computes every run on one thread, as the committed 3-seed reference did
reproduce: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/semclip-reproduce --dataset synthneg --seeds $(SEEDS) $(if $(THREADS),--threads $(THREADS))

# the test suite: one pytest case per notebook plus the integration tests
test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest tests -v -p no:cacheprovider --durations=15

# semclip/ must be what the notebooks export, and the notebooks must be clean
check-sync: install
	@$(VENV)/bin/nbdev-export
	@git diff --quiet -- semclip && test -z "$$(git status --porcelain -- semclip)" || \
	  { echo "ERROR: nbdev-export changed semclip/: the library is not what nbs/ exports. Run 'make export' and commit."; git status --short -- semclip; exit 1; }
	@$(VENV)/bin/nbdev-clean
	@git diff --quiet -- nbs || \
	  { echo "ERROR: nbdev-clean changed nbs/: commit clean notebooks (run 'make clean-nbs')."; git diff --stat -- nbs; exit 1; }
	@$(VENV)/bin/nbdev-proc-nbs > _proc.log 2>&1 && ! grep -q "Found cells containing imports" _proc.log || \
	  { echo "ERROR: nbdev-proc-nbs (the docs processor) failed or warned: see _proc.log"; tail -20 _proc.log; exit 1; }
	@rm -f _proc.log
	@$(VENV)/bin/ruff format --check --quiet . || { echo "ERROR: ruff format would change files: run 'make format'."; exit 1; }
	@$(VENV)/bin/ruff check --quiet . || { echo "ERROR: ruff check found problems (above)."; exit 1; }
	@echo "semclip/ matches nbs/, notebooks are clean, nbdev-proc-nbs passes, ruff format and ruff check pass."

export: install
	$(VENV)/bin/nbdev-export

clean-nbs: install
	$(VENV)/bin/nbdev-clean

# ruff's formatter and linter over the notebooks, tests, tools and benchmarks (settings in pyproject.toml), then
# the library exported again from the formatted notebooks
format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/nbdev-clean
	$(VENV)/bin/nbdev-export

bench: install
	for f in bench/*.py; do $(PY) $$f || exit 1; done

# the docs site: every notebook of nbs/ with its committed outputs (not executed) as static HTML in _docs/;
# offline (MathJax and require.js are vendored in docs/vendor/); open _docs/index.html
docs: install
	$(PY) tools/build_docs.py --out _docs
