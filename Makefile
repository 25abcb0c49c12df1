# katatrace: one static binary for Kata agent tracing.
GO          ?= go
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      := $(PREFIX)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.version=$(VERSION)
TOOLS       := $(CURDIR)/bin
export CGO_ENABLED := 0

.PHONY: all build install test unit e2e lint fuzz bench demo tools vm-kernel clean

all: build

## build: static binary bin/katatrace and its role symlinks in bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/katatrace .
	bin/katatrace links bin --log-level=warn

## install: binary and symlinks into $(DESTDIR)$(BINDIR)
install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 bin/katatrace $(DESTDIR)$(BINDIR)/katatrace
	bin/katatrace links $(DESTDIR)$(BINDIR) --target katatrace --log-level=warn

## tools: Jaeger v2 and staticcheck, built from tools/go.mod
tools: $(TOOLS)/jaeger $(TOOLS)/staticcheck
$(TOOLS)/jaeger: tools/go.mod
	cd tools && CGO_ENABLED=0 $(GO) build -o $(TOOLS)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
$(TOOLS)/staticcheck: tools/go.mod
	cd tools && $(GO) build -o $(TOOLS)/staticcheck honnef.co/go/tools/cmd/staticcheck

## lint: vet (also for darwin), gofmt, staticcheck
lint: $(TOOLS)/staticcheck
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(TOOLS)/staticcheck ./...

## unit: unit and integration tests with the race detector, then the
## allocation tests, which only mean something without it
UNIT_PKGS = $$($(GO) list ./... | grep -v /e2e)
unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 $(UNIT_PKGS)
	$(GO) test -count=1 -run 'Allocat' ./netx

## e2e: end-to-end tests against a real Jaeger (and socat, QEMU where present)
e2e: build $(TOOLS)/jaeger
	KATATRACE_E2E=1 KATATRACE_BIN=$(CURDIR)/bin/katatrace JAEGER_BIN=$(TOOLS)/jaeger \
	KATATRACE_VM_KERNEL=$${KATATRACE_VM_KERNEL:-$(CURDIR)/e2e/vm/.cache/vmlinuz} \
	$(GO) test -count=1 -timeout 30m ./e2e ./e2e/vm

## vm-kernel: fetch Debian's kernel for the VM test
vm-kernel:
	scripts/fetch-vm-kernel.sh e2e/vm/.cache/vmlinuz

## test: everything CI runs
test: lint unit e2e

## fuzz: each fuzz target for FUZZTIME (default 20s)
FUZZTIME ?= 20s
fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
	    echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
	  done; done

## bench: Go benchmarks, then the side-by-side table (baseline, socat,
## katatrace) and the 1,000-guest scale run; BENCHFLAGS adds flags
## (e.g. BENCHFLAGS="--json" or "--plot bench.png")
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./netx ./tracing
	$(GO) build -o bin/katatrace-bench ./cmd/katatrace-bench
	bin/katatrace-bench --bin bin/katatrace $(BENCHFLAGS)
	bin/katatrace-bench --bin bin/katatrace --scale

## demo: a real trace through guest relay, unix socket and host relay, printed
demo: build
	$(GO) run ./cmd/katatrace-demo --bin bin/katatrace

clean:
	rm -rf bin dist
