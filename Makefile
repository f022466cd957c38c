.PHONY: bootstrap run test bench

# Extra arguments for the script, e.g. `make test ARGS="-k dag"`.
ARGS ?=

bootstrap:
	bash scripts/bootstrap.sh

run:
	bash scripts/run.sh $(ARGS)

test:
	bash scripts/test.sh $(ARGS)

bench: bootstrap
	.venv/bin/python -m bench $(ARGS)
