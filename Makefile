# ngx_supervisord: the two commands are `make demo` and `make test`.
#
#   make build  nginx 1.28 at build/sbin/nginx, the module at build/modules/ngx_supervisord_module.so
#   make test   every unit and integration test (installs missing Debian packages first)
#   make demo   configuration example #2 of the 2010 module, live, with real backends

CARGO ?= cargo

.PHONY: all deps build lint unit integration test demo clean

all: build

deps:
	@bash .ci/install-deps

build: deps
	$(CARGO) build --release --locked
	$(CARGO) build --release --locked -p nginx-tests --bin test-backend
	mkdir -p build/sbin build/modules build/logs build/bin
	install -m 0755 target/release/test-backend build/bin/test-backend
	install -m 0755 target/release/libngx_supervisord.so build/modules/ngx_supervisord_module.so
	install -m 0755 "$$(ls -td target/release/build/nginx-sys-*/out/objs/nginx | head -n 1)" build/sbin/nginx

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --locked --workspace --all-targets -- -D warnings

unit: deps
	$(CARGO) test --release --locked -p ngx_supervisord

integration: build
	$(CARGO) test --release --locked -p nginx-tests -- --test-threads=4

test: lint unit integration

demo: build
	bash examples/demo.sh

clean:
	rm -rf build
	$(CARGO) clean
