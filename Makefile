# The same commands locally and in CI (.ci/run calls the script directly, so make is not required there).
.PHONY: check test dev fmt

check:  ## format, lint, types (strict for pool/ and handlers/), import contracts
	bash devstack/setup.sh check

test:  ## the default test suite against real engines (the chaos suite: make test ARGS="-m chaos")
	bash devstack/setup.sh test $(ARGS)

dev:  ## the whole local stack and ma-top
	bash devstack/setup.sh dev $(ARGS)

fmt:  ## apply the formatter and the safe lint fixes
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .
