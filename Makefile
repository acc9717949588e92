# Builds and installs the daemons, the C library, its header and pkg-config file,
# the man pages and shell completions (generated from the daemons' clap
# definitions) and the systemd units.
#
#     make                                  # cargo build --release
#     make install PREFIX=/usr DESTDIR=/tmp/pkg
#     make uninstall PREFIX=/usr DESTDIR=/tmp/pkg
#     make install-strip ...                # the same, binaries stripped
#
# Switches (see README, "Install"):
#   PROFILE=release   cargo profile to build and install from (dev/debug too);
#   BUILD=no          install what is already built, without running cargo;
#   BUILT_BINS, BUILT_LIBS  where the built daemons and libipc.so/.a are
#                     (default: target/<profile>).
# Every directory below can be overridden (BINDIR=..., SYSTEMDUNITDIR=...).

CARGO ?= cargo
PROFILE ?= release
BUILD ?= yes
TARGET_DIR ?= target

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
TMPFILESDIR ?= $(PREFIX)/lib/tmpfiles.d
WWWDIR ?= $(DATADIR)/libipc/www
# /usr and /usr/local are the system's: settings in /etc, and the loader
# finds libipc.so there (through ldconfig's cache for /usr/local/lib). Any
# other PREFIX (a trial install, PREFIX=$HOME/x) keeps everything under it:
# settings in PREFIX/etc, no ldconfig, and libipc.pc links programs with an
# rpath to LIBDIR, so that they find libipc.so there.
system_prefix := $(filter /usr /usr/local,$(PREFIX))
SYSCONFDIR ?= $(if $(system_prefix),/etc,$(PREFIX)/etc)
comma := ,
pc_rpath = $(if $(system_prefix),, -Wl$(comma)-rpath$(comma)$${libdir})

INSTALL ?= install
# `make install-strip`: `install -s` (the release profile keeps line tables).
INSTALL_PROGRAM ?= $(INSTALL) -m 755

DAEMONS := tcpd tlsd websocketd
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' libipc/Cargo.toml | head -n1)
# What a program linking libipc.a needs besides it (rustc --print
# native-static-libs says -lgcc_s too, which the cc driver links anyway and which
# has no static version: it would break `cc -static`).
STATIC_LIBS := -lutil -lrt -lpthread -lm -ldl

cargo_profile := $(if $(filter debug,$(PROFILE)),dev,$(PROFILE))
profile_dir := $(if $(filter dev debug,$(PROFILE)),debug,$(PROFILE))
BUILT_BINS ?= $(TARGET_DIR)/$(profile_dir)
BUILT_LIBS ?= $(TARGET_DIR)/$(profile_dir)

# A directory in the .pc file: relative to ${prefix} when under PREFIX.
pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))

# systemd/x.sysusers, systemd/sysusers.d/x.conf -> x.conf
conf = $(addsuffix .conf,$(basename $(notdir $(1))))

# Whatever the systemd/ directory holds (units, sysusers.d and tmpfiles.d
# entries), found when make runs.
UNITS := $(wildcard systemd/*.service systemd/*.socket systemd/*.target systemd/*.timer)
SYSUSERS := $(wildcard systemd/*.sysusers systemd/sysusers.d/*.conf)
TMPFILES := $(wildcard systemd/*.tmpfiles systemd/tmpfiles.d/*.conf)
# Settings read by the units (EnvironmentFile=): installed in SYSCONFDIR/libipc
# unless already there, never overwritten.
ENVFILES := $(wildcard systemd/*.env)
WWW := $(wildcard websocketd/www/*)
# Units naming the daemons by /usr/bin/NAME, /usr/local/bin/NAME or @bindir@/NAME
# get the BINDIR they are installed to.
UNIT_SED := sed -E -e 's,@bindir@,$(BINDIR),g' \
	-e 's,/usr/(local/)?bin/(tcpd|tlsd|websocketd)([^A-Za-z0-9_-]|$$),$(BINDIR)/\2\3,g' \
	-e 's,/etc/libipc/,$(SYSCONFDIR)/libipc/,g'

.PHONY: all build install install-strip uninstall
all: build

# The C library is built alone: built with the daemons, it would get libipc's
# TLS feature (cargo unifies features), which it does not use.
build:
ifneq ($(BUILD),no)
	$(CARGO) build --profile $(cargo_profile) --target-dir $(TARGET_DIR) -p libipc-c
	$(CARGO) build --profile $(cargo_profile) --target-dir $(TARGET_DIR) \
		$(addprefix -p ,$(DAEMONS))
endif

install: build
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL_PROGRAM) $(addprefix $(BUILT_BINS)/,$(DAEMONS)) $(DESTDIR)$(BINDIR)/
	$(INSTALL_PROGRAM) -D $(BUILT_LIBS)/libipc.so $(DESTDIR)$(LIBDIR)/libipc.so
	$(INSTALL) -D -m 644 $(BUILT_LIBS)/libipc.a $(DESTDIR)$(LIBDIR)/libipc.a
	$(INSTALL) -D -m 644 libipc-c/include/libipc.h $(DESTDIR)$(INCLUDEDIR)/libipc.h
	$(INSTALL) -d $(DESTDIR)$(PKGCONFIGDIR)
	printf '%s\n' \
		'prefix=$(PREFIX)' \
		'libdir=$(call pc_path,$(LIBDIR))' \
		'includedir=$(call pc_path,$(INCLUDEDIR))' \
		'' \
		'Name: libipc' \
		'Description: LibIPC: apps talking to apps over unix sockets' \
		'Version: $(VERSION)' \
		'Libs: -L$${libdir}$(pc_rpath) -lipc' \
		'Libs.private: $(STATIC_LIBS)' \
		'Cflags: -I$${includedir}' \
		> $(DESTDIR)$(PKGCONFIGDIR)/libipc.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/libipc.pc
	docs=$$(mktemp -d) && trap 'rm -rf "$$docs"' EXIT && \
	for d in $(DAEMONS); do \
		$(BUILT_BINS)/$$d --generate-docs "$$docs" || exit 1; \
		$(INSTALL) -D -m 644 "$$docs/man/$$d.1" $(DESTDIR)$(MANDIR)/man1/$$d.1 && \
		$(INSTALL) -D -m 644 "$$docs/completions/$$d.bash" $(DESTDIR)$(BASHCOMPDIR)/$$d && \
		$(INSTALL) -D -m 644 "$$docs/completions/_$$d" $(DESTDIR)$(ZSHCOMPDIR)/_$$d && \
		$(INSTALL) -D -m 644 "$$docs/completions/$$d.fish" $(DESTDIR)$(FISHCOMPDIR)/$$d.fish \
		|| exit 1; \
	done
ifneq ($(UNITS),)
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR)
	for f in $(UNITS); do \
		$(UNIT_SED) "$$f" > $(DESTDIR)$(SYSTEMDUNITDIR)/$${f##*/} && \
		chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${f##*/} || exit 1; \
	done
endif
ifneq ($(SYSUSERS)$(TMPFILES),)
	$(foreach f,$(SYSUSERS),$(INSTALL) -D -m 644 $(f) $(DESTDIR)$(SYSUSERSDIR)/$(call conf,$(f)) &&) \
	$(foreach f,$(TMPFILES),$(INSTALL) -D -m 644 $(f) $(DESTDIR)$(TMPFILESDIR)/$(call conf,$(f)) &&) true
endif
ifneq ($(ENVFILES),)
	for f in $(ENVFILES); do \
		to=$(DESTDIR)$(SYSCONFDIR)/libipc/$${f##*/}; \
		if [ -e "$$to" ]; then echo "keeping $$to"; \
		else $(INSTALL) -D -m 644 "$$f" "$$to" || exit 1; fi; \
	done
endif
ifneq ($(WWW),)
	$(INSTALL) -d $(DESTDIR)$(WWWDIR)
	$(INSTALL) -m 644 $(WWW) $(DESTDIR)$(WWWDIR)/
endif
ifneq ($(system_prefix),)
	@# The loader finds a library in /usr/local/lib through its cache only.
	@if [ -z "$(DESTDIR)" ] && command -v ldconfig >/dev/null; then \
		echo ldconfig; ldconfig; fi
else
	@echo "Installed under $(PREFIX), which the system does not search. To use it:"
	@echo "  export PATH=$(BINDIR):\$$PATH PKG_CONFIG_PATH=$(PKGCONFIGDIR)"
	@echo "Programs built with 'pkg-config --libs libipc' find libipc.so (an rpath);"
	@echo "others need LD_LIBRARY_PATH=$(LIBDIR)."
endif

install-strip:
	$(MAKE) install INSTALL_PROGRAM='$(INSTALL) -s -m 755'

uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(DAEMONS))
	rm -f $(DESTDIR)$(LIBDIR)/libipc.so $(DESTDIR)$(LIBDIR)/libipc.a
	rm -f $(DESTDIR)$(INCLUDEDIR)/libipc.h $(DESTDIR)$(PKGCONFIGDIR)/libipc.pc
	for d in $(DAEMONS); do \
		rm -f $(DESTDIR)$(MANDIR)/man1/$$d.1 $(DESTDIR)$(BASHCOMPDIR)/$$d \
			$(DESTDIR)$(ZSHCOMPDIR)/_$$d $(DESTDIR)$(FISHCOMPDIR)/$$d.fish; \
	done
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(notdir $(UNITS))) \
		$(addprefix $(DESTDIR)$(SYSUSERSDIR)/,$(call conf,$(SYSUSERS))) \
		$(addprefix $(DESTDIR)$(TMPFILESDIR)/,$(call conf,$(TMPFILES)))
	@# Settings only when unchanged.
	for f in $(ENVFILES); do \
		to=$(DESTDIR)$(SYSCONFDIR)/libipc/$${f##*/}; \
		if cmp -s "$$f" "$$to"; then rm -f "$$to"; \
		elif [ -e "$$to" ]; then echo "keeping $$to (changed)"; fi; \
	done
	rm -f $(addprefix $(DESTDIR)$(WWWDIR)/,$(notdir $(WWW)))
	rmdir $(DESTDIR)$(WWWDIR) 2>/dev/null || true
