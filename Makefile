# katatrace: one static binary for Kata agent tracing.
GO          ?= go
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      := $(PREFIX)/bin
SYSTEMDDIR  := $(PREFIX)/lib/systemd
UNITDIR     := $(SYSTEMDDIR)/system
TMPFILESDIR := $(PREFIX)/lib/tmpfiles.d
EXAMPLEDIR  := $(PREFIX)/share/katatrace
SYSCONFUNITDIR := /etc/systemd/system
GUEST_UNITS := kata-agent.service.d/katatrace.conf jaeger-client-socat-redirector.service kata-journald-host-redirect.service
HOST_UNITS  := vsock-to-udp-server.service vsock-to-text-server.service kata-trace-forwarder.service
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# disablethp=1: the Go heap without transparent huge pages, where a
# kernel gives them to every process (THP "always", Debian's guests among
# them): a relay's small heap would be resident in 2 MiB pages. The setting
# is the runtime's (GODEBUG=disablethp=1 does the same), made the binary's
# default here as the go command makes its defaults: //go:debug lines only
# take the settings the go command lists, and it does not list this one.
LDFLAGS     := -s -w -X main.version=$(VERSION) -X runtime.godebugDefault=disablethp=1
TOOLS       := $(CURDIR)/bin
export CGO_ENABLED := 0

.PHONY: all build image install install-bin install-guest install-host test unit sim e2e lint fuzz fuzz-short bench demo tools vm-kernel vm-root clean packages promtool-test chart-test manifests seccomp-profiles

all: build

## build: static binary bin/katatrace and its role symlinks in bin/
build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/katatrace .
	bin/katatrace links bin --log-level=warn

## image: the OCI image, an index for linux amd64, arm64, s390x and
##   ppc64le made from the static binaries without a container daemon:
##   dist/image (an OCI layout) and dist/katatrace-image.tar (oci-archive).
##   The host's architecture takes make build's binary. Same commit and
##   toolchain, same digest (SOURCE_DATE_EPOCH: the commit's time).
IMAGE_ARCHS := amd64 arm64 s390x ppc64le
IMAGE_DIR   := $(CURDIR)/dist/image
HOST_ARCH   := $(shell $(GO) env GOARCH)
REVISION    := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
image_bin    = $(if $(filter $(HOST_ARCH),$(1)),bin/katatrace,bin/linux-$(1)/katatrace)
image: build
	for a in $(filter-out $(HOST_ARCH),$(IMAGE_ARCHS)); do \
	  GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/linux-$$a/katatrace . || exit 1; \
	done
	$(GO) run ./cmd/katatrace-image --out $(IMAGE_DIR) --archive dist/katatrace-image.tar \
	  --version $(VERSION) --revision $(REVISION) --created $(SOURCE_DATE_EPOCH) \
	  $(foreach a,$(IMAGE_ARCHS),--binary linux/$(a)=$(call image_bin,$(a)))

## install: everything, guest and host: make install DESTDIR=<root> PREFIX=/usr
## install-guest: binary, links, the kata-agent drop-in, the guest units
##   (the journal relay enabled for kata-containers.target), journald's
##   forwarding drop-in
##   (a syslog daemon enabled as syslog.service, rsyslog's way, keeps the
##   image's syslog: then neither the relay nor the drop-in goes in)
## install-host: binary, links, the host units (enable them yourself),
##   tmpfiles.d's /run/vc and /run/kata, the hybrid-vsock drop-in as an
##   example
install: install-guest install-host

# BIN_SRC: the binary install-bin installs; unset, make build's
# bin/katatrace, built first (make packages' VM test packages binaries of
# its own without touching bin/).
install-bin: $(if $(BIN_SRC),,build)
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(or $(BIN_SRC),bin/katatrace) $(DESTDIR)$(BINDIR)/katatrace
	$(DESTDIR)$(BINDIR)/katatrace links $(DESTDIR)$(BINDIR) --target katatrace --log-level=warn

# Units carry @BINDIR@ and @UNITDIR@, filled in here so that they follow PREFIX.
SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@UNITDIR@|$(UNITDIR)|g'
define install-units
	install -d $(addprefix $(DESTDIR)$(UNITDIR)/,$(sort $(dir $(1))))
	for u in $(1); do \
	  $(SUBST) scripts/systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u.tmp && \
	  chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp && mv $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
endef

# syslogd is the syslog daemon the image already has as syslog.service:
# rsyslog's "systemctl enable" makes /etc/systemd/system/syslog.service
# its alias (a symlink); a daemon may also ship a file of that name.
syslogd = $(strip $(foreach f,$(DESTDIR)$(SYSCONFUNITDIR)/syslog.service $(DESTDIR)$(UNITDIR)/syslog.service,\
  $(if $(wildcard $(f)),$(if $(findstring kata-journald-host-redirect,$(shell readlink $(f))),,$(f)))))

install-guest: install-bin
	$(call install-units,$(GUEST_UNITS))
ifeq ($(syslogd),)
	install -d $(DESTDIR)$(SYSTEMDDIR)/journald.conf.d $(DESTDIR)$(UNITDIR)/kata-containers.target.wants
	install -m 0644 scripts/systemd/journald.conf.d/katatrace.conf $(DESTDIR)$(SYSTEMDDIR)/journald.conf.d/katatrace.conf
	@# Enabled in place, as systemctl enable would: syslog.service is the
	@# journal relay.
	ln -sfn ../kata-journald-host-redirect.service $(DESTDIR)$(UNITDIR)/kata-containers.target.wants/kata-journald-host-redirect.service
	ln -sfn kata-journald-host-redirect.service $(DESTDIR)$(UNITDIR)/syslog.service
else
	@echo "install-guest: $(patsubst $(DESTDIR)%,%,$(firstword $(syslogd))) is a syslog daemon's ($(notdir $(shell readlink $(firstword $(syslogd))))):" \
	  "the image's syslog is left alone; the journal relay is installed but not enabled, and journald's forwarding drop-in is not installed." \
	  "To send the journal to the host instead, disable that daemon and run make install-guest again."
endif

install-host: install-bin
	$(call install-units,$(HOST_UNITS))
	install -d $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(EXAMPLEDIR)
	install -m 0644 scripts/tmpfiles.d/katatrace.conf $(DESTDIR)$(TMPFILESDIR)/katatrace.conf
	$(SUBST) scripts/systemd/examples/hybrid-vsock.conf > $(DESTDIR)$(EXAMPLEDIR)/hybrid-vsock.conf

## tools: Jaeger v2 and staticcheck, built from tools/go.mod
tools: $(TOOLS)/jaeger $(TOOLS)/staticcheck
$(TOOLS)/jaeger: tools/go.mod
	cd tools && CGO_ENABLED=0 $(GO) build -o $(TOOLS)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger
$(TOOLS)/staticcheck: tools/go.mod
	cd tools && $(GO) build -o $(TOOLS)/staticcheck honnef.co/go/tools/cmd/staticcheck

## packages: .deb and .rpm into dist/ (nfpm, tools/nfpm): katatrace (the
## binary and its links), katatrace-host (as install-host installs it) and
## katatrace-guest (as install-guest into a root without a syslog daemon),
## for this machine's architecture; PKG_VERSION from git describe
## (packaging/version.sh); then reads them back (packaging's tests).
## PKG_DIST (the packages' directory), PKG_STAGE (a scratch tree, removed)
## and BIN_SRC (the binary; unset: make build's) send it elsewhere: with
## all three set it writes nothing in bin/ or dist/.
PKG_ARCH    ?= $(shell $(GO) env GOARCH)
PKG_VERSION ?= $(shell sh packaging/version.sh)
PKG_DIST    ?= $(CURDIR)/dist
PKG_STAGE   ?= $(PKG_DIST)/stage
# packaging/*.yaml name the staged trees @PKG_STAGE@ (nfpm expands no
# variable in a tree's src): filled in here, as the units' @BINDIR@.
PKG_SUBST    = sed -e 's|@PKG_STAGE@|$(PKG_STAGE)|g' -e 's|@PKG_SCRIPTS@|$(CURDIR)/packaging/scripts|g'
# make build's binary is this machine's, and install-bin runs it to make
# the role links: another PKG_ARCH takes a binary of its own, refused
# before anything is built (make test makes packages too).
ifneq ($(filter packages test,$(MAKECMDGOALS)),)
ifneq ($(PKG_ARCH),$(HOST_ARCH))
ifeq ($(BIN_SRC),)
$(error PKG_ARCH=$(PKG_ARCH) is not this machine's architecture ($(HOST_ARCH)): make build's binary would be packaged as $(PKG_ARCH); give BIN_SRC=a linux/$(PKG_ARCH) binary this machine can run (the role links are made by running it: binfmt_misc with qemu), or leave PKG_ARCH out)
endif
endif
endif
packages: $(TOOLS)/nfpm $(if $(BIN_SRC),,build)
	rm -rf $(PKG_STAGE) $(PKG_DIST)/*.deb $(PKG_DIST)/*.rpm && mkdir -p $(PKG_DIST) $(PKG_STAGE)
	$(MAKE) --no-print-directory install-bin DESTDIR=$(PKG_STAGE)/bin PREFIX=/usr BIN_SRC=$(or $(BIN_SRC),bin/katatrace)
	$(MAKE) --no-print-directory install-host DESTDIR=$(PKG_STAGE)/host PREFIX=/usr BIN_SRC=$(or $(BIN_SRC),bin/katatrace)
	$(MAKE) --no-print-directory install-guest DESTDIR=$(PKG_STAGE)/guest PREFIX=/usr BIN_SRC=$(or $(BIN_SRC),bin/katatrace)
	@# The binary and links are katatrace's package, not the units'.
	rm -rf $(PKG_STAGE)/host/usr/bin $(PKG_STAGE)/guest/usr/bin
	for p in katatrace katatrace-host katatrace-guest; do \
	  $(PKG_SUBST) packaging/$$p.yaml > $(PKG_STAGE)/$$p.yaml || exit 1; \
	  for f in deb rpm; do \
	    PKG_ARCH=$(PKG_ARCH) PKG_VERSION='$(PKG_VERSION)' \
	      $(TOOLS)/nfpm package --config $(PKG_STAGE)/$$p.yaml --packager $$f --target $(PKG_DIST)/ || exit 1; \
	done; done
	rm -rf $(PKG_STAGE)
	@ls -l $(PKG_DIST)/*.deb $(PKG_DIST)/*.rpm
	@# Read back: files, modes, links, dependencies, the scripts' calls.
	KATATRACE_DIST=$(PKG_DIST) $(GO) test -count=1 ./packaging

## promtool-test: the alert rules' tests (deploy/prometheus), by promtool
promtool-test: $(TOOLS)/promtool
	$(TOOLS)/promtool check rules deploy/prometheus/katatrace-alerts.yaml
	cd deploy/prometheus && $(TOOLS)/promtool test rules katatrace-alerts_test.yaml

## chart-test: the Helm chart's tests (deploy/helm/test, a module of its
##   own): helm lint --strict, then helm template with the defaults and
##   with every feature on, each object decoded strictly into the
##   Kubernetes API's types and checked; deploy/kubernetes/katatrace.yaml
##   against a fresh render; the seccomp profiles against a fresh
##   generation; every flag the chart gives against make build's binary
chart-test: $(TOOLS)/helm build
	$(TOOLS)/helm lint --strict deploy/helm/katatrace
	cd deploy/helm/test && $(GO) mod tidy -diff && $(GO) vet ./... && \
	  HELM=$(TOOLS)/helm KATATRACE_BIN=$(CURDIR)/bin/katatrace $(GO) test -count=1 ./...

## manifests: deploy/kubernetes/katatrace.yaml, the chart rendered with
##   its defaults (for kubectl apply), written by the test that checks it
manifests: $(TOOLS)/helm
	cd deploy/helm/test && HELM=$(TOOLS)/helm KATATRACE_UPDATE_MANIFESTS=1 $(GO) test -count=1 -run '^TestManifests$$' .

## seccomp-profiles: seccomp/linux-ARCH.json (embedded in the binary:
##   katatrace seccomp-profile), from moby's default profile plus
##   socket(AF_VSOCK) (deploy/helm/test/genseccomp)
seccomp-profiles:
	cd deploy/helm/test && $(GO) run ./genseccomp -out $(CURDIR)/seccomp

# nfpm, promtool and helm, each in a module of its own (their dependencies
# clash with Jaeger's); promtool without service discovery, which it
# does not need to test rules.
$(TOOLS)/nfpm: tools/nfpm/go.mod
	cd tools/nfpm && CGO_ENABLED=0 $(GO) build -o $(TOOLS)/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm
$(TOOLS)/promtool: tools/promtool/go.mod
	cd tools/promtool && CGO_ENABLED=0 $(GO) build -tags remove_all_sd -o $(TOOLS)/promtool github.com/prometheus/prometheus/cmd/promtool
$(TOOLS)/helm: tools/helm/go.mod
	cd tools/helm && CGO_ENABLED=0 $(GO) build -o $(TOOLS)/helm helm.sh/helm/v4/cmd/helm

## lint: vet (also for darwin), gofmt, staticcheck
lint: $(TOOLS)/staticcheck
	$(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	$(GO) mod tidy -diff
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(TOOLS)/staticcheck ./...

## unit: unit and integration tests with the race detector (printing the
## fault and abuse suite's table), then the allocation tests, which only
## mean something without it
UNIT_PKGS = $$($(GO) list ./... | grep -v /e2e)
unit:
	@mkdir -p bin && rm -f bin/fault-table.txt
	CGO_ENABLED=1 KATATRACE_FAULT_TABLE=$(CURDIR)/bin/fault-table.txt $(GO) test -race -count=1 $(UNIT_PKGS)
	@echo "fault and abuse suite (under -race):" && cat bin/fault-table.txt
	$(GO) test -count=1 -run 'Allocat' ./hostrelay

## sim: the relay protocol's simulation (internal/sim, docs/design.md)
## over SEEDS seeds from SEED_BASE, with the race detector; a failing
## seed says how to replay it alone (unit runs a fixed number)
SEEDS     ?= 1000
SEED_BASE ?= 1
sim:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 60m -run 'TestSim$$' ./internal/sim -seeds $(SEEDS) -seed-base $(SEED_BASE)

## e2e: end-to-end tests against a real Jaeger (and socat, QEMU where present)
# The VM suite runs verbose: its figures (each guest process's memory, each
# guest role's start-up) are in its output, not in assertions.
# The image's tests read make image's layout and run the host's architecture's root.
e2e: build image $(TOOLS)/jaeger
	KATATRACE_E2E=1 KATATRACE_BIN=$(CURDIR)/bin/katatrace JAEGER_BIN=$(TOOLS)/jaeger KATATRACE_IMAGE=$(IMAGE_DIR) \
	$(GO) test -count=1 -timeout 30m ./e2e
	KATATRACE_E2E=1 KATATRACE_BIN=$(CURDIR)/bin/katatrace JAEGER_BIN=$(TOOLS)/jaeger \
	KATATRACE_VM_KERNEL=$${KATATRACE_VM_KERNEL:-$(CURDIR)/e2e/vm/.cache/vmlinuz} \
	$(GO) test -count=1 -timeout 30m -v ./e2e/vm

## vm-kernel: fetch Debian's kernel (and its vsock modules) for the VM tests
vm-kernel:
	scripts/fetch-vm-kernel.sh e2e/vm/.cache/vmlinuz

## vm-root: build the systemd guest's root (mmdebstrap, as root) for the VM tests
vm-root:
	scripts/build-guest-root.sh e2e/vm/.cache/guest-root.tar

## test: everything CI runs
test: lint unit fuzz-short promtool-test chart-test packages e2e

## fuzz-short: every fuzz target for a few seconds, so that a parser
## regression the seeds miss still has a chance to fail CI
fuzz-short:
	$(MAKE) --no-print-directory fuzz FUZZTIME=$${FUZZTIME_SHORT:-3s}

## fuzz: each fuzz target for FUZZTIME (default 20s)
FUZZTIME ?= 20s
# A run that fails only with "context deadline exceeded" and writes no
# failing input is Go's own race at the end of -fuzztime (go.dev/issue/75804,
# fixed in Go 1.27), not a finding: it is said, and the next target runs.
fuzz:
	@for p in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p | grep ^Fuzz); do \
	    echo "== $$p $$f"; \
	    out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p 2>&1); rc=$$?; echo "$$out"; \
	    if [ $$rc -ne 0 ]; then \
	      if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
	        echo "(the fuzz coordinator's deadline race, go.dev/issue/75804: no failing input, not a failure)"; \
	      else exit 1; fi; \
	    fi; \
	  done; done

## bench: Go benchmarks, then the side-by-side table (baseline, socat,
## katatrace), the 1,000-guest scale run, and Kata 3.x spans through
## kata-trace-forwarder into Jaeger beside the 1.x path; BENCHFLAGS adds flags
## (e.g. BENCHFLAGS="--json" or "--plot bench.png")
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./wire ./hostrelay ./guestrelay ./jaegerthrift ./kataspan
	$(GO) build -o bin/katatrace-bench ./cmd/katatrace-bench
	bin/katatrace-bench --bin bin/katatrace $(BENCHFLAGS)
	bin/katatrace-bench --bin bin/katatrace --scale
	$(MAKE) --no-print-directory $(TOOLS)/jaeger
	bin/katatrace-bench --bin bin/katatrace --kata3 --jaeger $(TOOLS)/jaeger

## demo: a real trace through guest relay, unix socket and host relay, printed
demo: build
	$(GO) run ./cmd/katatrace-demo --bin bin/katatrace

clean:
	rm -rf bin dist
