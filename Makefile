# The two commands a newcomer needs: `make up` and `make test`.
# Both set themselves up on a machine that has only Python 3.11+ and make:
# uv is installed into .tools/ when missing, the workspace is synced into .venv/.

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

# Never let uv fetch an interpreter: use the Python that is on the machine.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON_PREFERENCE := only-system
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Byte-compile what uv installs: where PYTHONDONTWRITEBYTECODE is set, nothing else ever does,
# and every process (each service of `agora up`, each test's subprocess) would compile the
# framework from source again at each start.
export UV_COMPILE_BYTECODE := 1

.PHONY: up test lint typecheck contracts-lint contracts unit deploy-test k8s-test sync bench loadgen reset screenshots help \
	shipping-deps shipping-lint shipping-typecheck shipping-test

help:
	@echo "make up      start Agora (all services and the gateway) on this machine"
	@echo "make test    lint, type-check, check the import contracts and run every test"
	@echo "make deploy-test  build every image and run the system from its Compose file (root)"
	@echo "make k8s-test     run the local Kubernetes overlay under podman kube play (root)"
	@echo "make contracts  write the event schemas and AsyncAPI document into docs/contracts/"
	@echo "make bench   the performance scenarios under bench/ (read path, events, checkout, password checks, ASGI overhead, unit of work, RPC, co-location, memory floor)"
	@echo "make loadgen Locust's mixed load on a shop of its own (or ARGS=\"--url URL\"), objectives checked"
	@echo "make screenshots  the README's pictures of the storefront and the console, into docs/screenshots/"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# uv compiles what it installs, but not the workspace's own packages: they are installed editable,
# imported from libs/, services/ and gateway/ in place. Compile them beside their sources too
# (compileall writes whatever PYTHONDONTWRITEBYTECODE says; it only stops imports writing). A file
# that does not compile is left to its import, lint and tests to report: the bytecode only saves time.
sync: $(UV)
	$(UV) sync --locked --quiet
	$(BIN)/python -m compileall -q -j 0 libs/*/src services/*/src gateway/src >/dev/null || true

up: sync
	$(BIN)/agora up $(ARGS)

lint: sync
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: sync
	$(BIN)/mypy libs services gateway tests bench deploy loadgen

contracts-lint: sync
	$(BIN)/lint-imports

# Refuses an incompatible change of a published event: that needs a new version of the event.
contracts: sync
	$(BIN)/python -m contracts.export

unit: sync
	$(BIN)/pytest $(PYTEST_ARGS)

# Installs Docker from Debian's packages, builds the base and every image, and runs the system
# from the rendered Compose file (deploy/tests/); it skips without root, and fails so under CI.
deploy-test: sync
	$(BIN)/pytest deploy/tests -m "not k8s" $(PYTEST_ARGS)

# The local overlay of deploy/k8s/, built with kustomize, run by podman (installed from Debian's
# packages) with the same images: the manifests started for real, without an API server.
k8s-test: sync
	$(BIN)/pytest deploy/tests -m k8s $(PYTEST_ARGS)

# Shipping is TypeScript (services/shipping): its packages come from its package-lock.json,
# installed again whenever node_modules is missing or older than the lock file.
SHIPPING := services/shipping

$(SHIPPING)/node_modules/.installed: $(SHIPPING)/package-lock.json $(SHIPPING)/package.json
	cd $(SHIPPING) && npm ci --no-audit --no-fund
	touch $@

shipping-deps: $(SHIPPING)/node_modules/.installed

shipping-lint: shipping-deps
	cd $(SHIPPING) && npm run --silent lint

shipping-typecheck: shipping-deps
	cd $(SHIPPING) && npm run --silent typecheck

# Its messaging tests start a nats-server of their own: the one the workspace installs.
shipping-test: shipping-deps sync
	cd $(SHIPPING) && npm test

test: lint typecheck contracts-lint unit shipping-lint shipping-typecheck shipping-test deploy-test k8s-test

bench: sync
	$(BIN)/python bench/read_path.py
	$(BIN)/python bench/events.py
	$(BIN)/python bench/checkout.py
	$(BIN)/python bench/password_checks.py
	$(BIN)/python bench/asgi_overhead.py
	$(BIN)/python bench/unit_of_work.py
	$(BIN)/python bench/rpc.py
	$(BIN)/python bench/colocation.py
	$(BIN)/python bench/memory_floor.py

# Locust's shoppers and admin on a shop it starts (or ARGS="--url ..."), then its objectives and
# agora verify; the HTML report goes to loadgen/report/report.html.
loadgen: sync
	$(BIN)/python loadgen/run.py $(ARGS)

# Starts a shop of its own and photographs it in the machine's Chromium (installed when missing).
screenshots: sync
	$(BIN)/python tests/browser/screenshots.py

reset: sync
	$(BIN)/agora reset
