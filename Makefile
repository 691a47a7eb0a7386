# ngx_supervisord: the two commands are `make demo` and `make test`.
#
#   make build  nginx 1.28 at build/sbin/nginx, the module at build/modules/ngx_supervisord_module.so
#   make test   every unit and integration test (installs missing Debian packages first)
#   make demo   the main job live: a real supervisord starts a backend for the first request
#   make bench  cold-start and capacity figures

CARGO ?= cargo
SHELL := /bin/bash

DISTRO_SRC := build/distro-nginx-src

.PHONY: all deps build lint unit integration distro-build distro-test test demo bench clean

all: build

deps:
	@bash .ci/install-deps

build: deps
	$(CARGO) build --release --locked
	$(CARGO) build --release --locked -p nginx-tests --bins
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

# The module built against Debian's own nginx (nginx-dev's source, configured with Debian's
# flags), loaded into /usr/sbin/nginx, through the same integration tests.
distro-build: deps
	@bash .ci/install-deps nginx nginx-dev
	@if [ ! -f $(DISTRO_SRC)/objs/ngx_auto_config.h ]; then \
	    rm -rf $(DISTRO_SRC) && mkdir -p build && cp -r /usr/share/nginx/src $(DISTRO_SRC) && \
	    cd $(DISTRO_SRC) && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" --builddir=$$PWD/objs > configure.log; \
	fi
	NGINX_SOURCE_DIR=$(CURDIR)/$(DISTRO_SRC) NGINX_BUILD_DIR=$(CURDIR)/$(DISTRO_SRC)/objs \
	    CARGO_TARGET_DIR=$(CURDIR)/target/distro \
	    $(CARGO) build --release --locked --no-default-features
	mkdir -p build/distro
	install -m 0755 target/distro/release/libngx_supervisord.so build/distro/ngx_supervisord_module.so

distro-test: distro-build build
	NGX_SUPERVISORD_NGINX=/usr/sbin/nginx \
	NGX_SUPERVISORD_MODULE=$(CURDIR)/build/distro/ngx_supervisord_module.so \
	    $(CARGO) test --release --locked -p nginx-tests -- --test-threads=4

# Runs every suite, then sums up the test counts of all of them on the last line.
test:
	@mkdir -p build
	@set -o pipefail; $(MAKE) --no-print-directory lint unit integration distro-test 2>&1 | tee build/test.log; \
	status=$$?; \
	awk '/^test result:/ { passed += $$4; failed += $$6 } \
	     END { printf "%d passed, %d failed\n", passed, failed }' build/test.log; \
	exit $$status

demo: build
	bash examples/demo.sh

# Cold start (200 concurrent requests while everything is stopped), capacity (10,000 held
# requests) and throughput (managed vs plain upstream, wrk), in one run; figures, not pass/fail.
bench: build
	@bash .ci/install-deps wrk
	target/release/bench

clean:
	rm -rf build
	$(CARGO) clean
