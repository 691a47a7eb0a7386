# ngx_supervisord: the two commands are `make demo` and `make test`.
#
#   make build  nginx 1.28 at build/sbin/nginx, the module at build/modules/ngx_supervisord_module.so
#   make test   every unit and integration test, on nginx 1.28, Debian's nginx, an ASan build
#               and nginx 1.28 and Debian's 1.22 with the core patches (compared with stock)
#               (installs missing Debian packages first)
#   make patched      nginx 1.28 with patches/ (init_busy, round-robin) in build/patched/
#   make test-under-load  the integration suite on nginx 1.28 while two CPU hogs keep both
#               cores busy (a quick stress check of the suite's waits)
#   make demo   the main job live: a real supervisord starts a backend for the first request
#   make bench  cold-start, capacity, throughput and scaling figures
#   make fuzz   every fuzz target of fuzz/ (the core's parsers of outside input) to 10 million
#               executions, with cargo-fuzz and nightly Rust; per target and total runs and
#               executions per second. make fuzz-smoke: 20 s each (skipped without nightly)

CARGO ?= cargo
SHELL := /bin/bash

.PHONY: all deps build demo-hosts lint unit integration distro-build distro-test asan patched \
        patched-1.22 patched-1.22-test patched-test test test-under-load demo bench fuzz \
        fuzz-smoke clean

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

# Every `cargo test` runs all of its test binaries, whatever failed in one (--no-fail-fast).
# Tests that do not apply to a build are `#[ignore = "why"]`: libtest reports them as ignored,
# and `make test` counts them as skipped; wall-clock bounds in the suite are multiplied by
# NGX_SUPERVISORD_TIME_FACTOR (1 unless set). The unit tests are the core crate's: the
# module's own crate is the nginx edge, with none (a test binary could not link nginx).
unit: deps
	$(CARGO) test --release --locked --no-fail-fast -p ngx_supervisord_core

integration: build
	$(CARGO) test --release --locked --no-fail-fast -p nginx-tests -- --test-threads=4

test-under-load: build
	bash .ci/under-load $(MAKE) --no-print-directory integration

# The module built against Debian's own nginx (nginx-dev's source, configured with Debian's
# flags) and installed into it, by running the README's steps verbatim; then loaded into
# /usr/sbin/nginx by the same integration tests.
distro-build: deps
	bash .ci/readme-steps debian-install
	mkdir -p build/distro
	install -m 0755 target/debian/release/libngx_supervisord.so build/distro/ngx_supervisord_module.so

distro-test: distro-build build
	NGX_SUPERVISORD_NGINX=/usr/sbin/nginx \
	NGX_SUPERVISORD_MODULE=$(CURDIR)/build/distro/ngx_supervisord_module.so \
	    $(CARGO) test --release --locked --no-fail-fast -p nginx-tests -- --test-threads=4

# The integration suite against nginx 1.28 built with AddressSanitizer, its pools allocated one
# block per call (NGX_DEBUG_PALLOC) so that ASan sees every pool allocation, and the module built
# against it. A report aborts the worker (the suite's log check fails the test) and is kept in
# build/asan-logs, which must stay empty. The module's own Rust code is not instrumented (stable
# Rust has no sanitizer flags); its use of nginx's memory is. Its nginx is several times slower:
# the suite's time bounds are scaled by 3 (NGX_SUPERVISORD_TIME_FACTOR, unless set).
ASAN_NGINX = $$(ls -td $(CURDIR)/target/asan/release/build/nginx-sys-*/out/objs/nginx | head -n 1)
asan: deps
	NGX_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -DNGX_DEBUG_PALLOC=1" \
	NGX_LDFLAGS="-fsanitize=address" \
	    $(CARGO) build --release --locked --target-dir target/asan
	$(CARGO) build --release --locked -p nginx-tests --bins
	rm -rf build/asan-logs && mkdir -p build/asan-logs && chmod 1777 build/asan-logs
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=0:log_path=$(CURDIR)/build/asan-logs/asan \
	NGX_SUPERVISORD_NGINX=$(ASAN_NGINX) \
	NGX_SUPERVISORD_MODULE=$(CURDIR)/target/asan/release/libngx_supervisord.so \
	NGX_SUPERVISORD_TIME_FACTOR=$${NGX_SUPERVISORD_TIME_FACTOR:-3} \
	    $(CARGO) test --release --locked --no-fail-fast -p nginx-tests -- --test-threads=2
	@if ls build/asan-logs/asan.* >/dev/null 2>&1; then \
	    echo "AddressSanitizer reports:"; cat build/asan-logs/asan.*; exit 1; \
	fi

# nginx 1.28 with the core patches of patches/ (and upstream-fair as a dynamic module once
# .ci/fetch-fair exists): build/patched/sbin/nginx, and the module built against that tree in
# build/patched/modules/.
patched: deps
	bash .ci/build-patched 1.28

# Debian's nginx 1.22.1 source with the 1.22 patches, configured with Debian's flags, compiled
# (binary and modules) in build/patched-1.22-src; the binary in build/patched-1.22/sbin.
patched-1.22: deps
	bash .ci/build-patched 1.22

# The patched 1.22 build against Debian's own nginx (configured alike): the patched nginx must
# behave as stock nginx, alone and with the module built for Debian's nginx loaded.
patched-1.22-test: patched-1.22 distro-build
	NGX_SUPERVISORD_PATCHED=1 \
	NGX_SUPERVISORD_NGINX=$(CURDIR)/build/patched-1.22/sbin/nginx \
	NGX_SUPERVISORD_STOCK_NGINX=/usr/sbin/nginx \
	NGX_SUPERVISORD_MODULE=$(CURDIR)/build/distro/ngx_supervisord_module.so \
	    $(CARGO) test --release --locked --no-fail-fast -p nginx-tests --test patched_stock \
	    -- --include-ignored --test-threads=2

# The integration tests written for the patched build, nginx-tests/tests/patched_*.rs: ignored
# elsewhere ("needs the patched nginx"), run here with --include-ignored. patched_stock compares
# the patched nginx with stock nginx 1.28 configured alike (build/sbin/nginx).
PATCHED_TESTS = $(patsubst nginx-tests/tests/%.rs,%,$(wildcard nginx-tests/tests/patched_*.rs))
patched-test: patched build
	@if [ -z "$(PATCHED_TESTS)" ]; then echo "no nginx-tests/tests/patched_*.rs"; exit 0; fi; \
	set -x; \
	NGX_SUPERVISORD_PATCHED=1 \
	NGX_SUPERVISORD_NGINX=$(CURDIR)/build/patched/sbin/nginx \
	NGX_SUPERVISORD_STOCK_NGINX=$(CURDIR)/build/sbin/nginx \
	NGX_SUPERVISORD_MODULE=$(CURDIR)/build/patched/modules/ngx_supervisord_module.so \
	    $(CARGO) test --release --locked --no-fail-fast -p nginx-tests \
	    $(addprefix --test ,$(PATCHED_TESTS)) -- --include-ignored --test-threads=2

# Runs every suite to its end, whatever failed before (.ci/test-all), the whole output in
# build/test.log; names the failures, then ends with `N passed, M failed, K skipped` (libtest's
# counts summed over all suites; "ignored" tests are the skipped ones) and fails if any failed.
test:
	@MAKE="$(MAKE)" bash .ci/test-all lint unit integration distro-test asan patched-1.22-test \
	    patched-test fuzz-smoke

demo: build
	bash examples/demo.sh

# One upstream over two hosts (loopback addresses), each with its own supervisord (example #3).
demo-hosts: build
	bash examples/demo-hosts.sh

# Cold start (200 concurrent requests while everything is stopped), capacity (10,000 held
# requests) and throughput (managed vs plain upstream, wrk), in one run; figures, not pass/fail.
bench: build
	@bash .ci/install-deps wrk
	target/release/bench

# libFuzzer through cargo-fuzz (installed when missing) on nightly Rust; see .ci/fuzz. The
# seeds of each target (fuzz/seeds/) are also replayed by the core's stable unit tests.
FUZZ_RUNS ?= 10000000
fuzz:
	bash .ci/fuzz runs $(FUZZ_RUNS)

fuzz-smoke:
	bash .ci/fuzz seconds 20

clean:
	rm -rf build
	$(CARGO) clean
	rm -rf fuzz/target
