# pull-unpack: `make demo` for the offline tour, `make test` for the whole suite.
.PHONY: all install build demo test typecheck clean

all: build

install:
	scripts/setup.sh

build:
	npm run --silent build

demo:
	scripts/demo.sh

test:
	scripts/test.sh

typecheck:
	npx tsc -p tsconfig.test.json

clean:
	rm -rf dist
