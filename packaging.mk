# Debian package (debian/README.Debian). Included from the Makefile.
#
#   make deb        build $(DEB_OUT)/evqueue-core_<version>_<arch>.deb (plus .buildinfo and
#                   .changes) from a clean copy of the tree: tracked files and untracked ones that
#                   are not ignored, so uncommitted work is included and .venv, var/ are not.
#   make deb-deps   install the build dependencies listed in debian/control (root, apt).
#
# The build runs pip, so it needs the Python package index or a mirror (see debian/rules).

DEB_OUT   ?= dist
DEB_BUILD := $(DEB_OUT)/deb-build

.PHONY: deb deb-deps

deb:
	rm -rf $(DEB_BUILD)
	mkdir -p $(DEB_BUILD)/src
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z --cached --others --exclude-standard; \
	else \
	  find . \( -name .git -o -name .venv -o -name var -o -name dist -o -name build \
	    -o -name __pycache__ -o -name '*.egg-info' \) -prune -o \( -type f -o -type l \) -print0; \
	fi | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C $(DEB_BUILD)/src
	cd $(DEB_BUILD)/src && dpkg-buildpackage -us -uc -b
	mv $(DEB_BUILD)/*.deb $(DEB_BUILD)/*.buildinfo $(DEB_BUILD)/*.changes $(DEB_OUT)/
	rm -rf $(DEB_BUILD)
	@ls -1 $(DEB_OUT)/*.deb

deb-deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get build-dep -y --no-install-recommends ./
