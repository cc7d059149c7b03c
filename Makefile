# pull-unpack: `make demo` for the offline tour, `make test` for the whole suite.
.PHONY: all install build demo test typecheck clean bench

all: build

install:
	scripts/setup.sh

build:
	npm run --silent build

demo:
	scripts/demo.sh

test:
	scripts/test.sh

# Side-by-side benchmark (docs/performance.md); e.g. make bench BENCH_ARGS=--quick
bench:
	scripts/setup.sh
	node bench/run.mjs $(BENCH_ARGS)

typecheck:
	npx tsc -p tsconfig.test.json

clean:
	rm -rf dist
