#!/bin/sh
# Renders the cherry-gateway.service template for an install prefix (the virtualenv holding
# bin/cherry-gateway) to standard output:
#   deploy/systemd/render.sh /opt/cherry > /etc/systemd/system/cherry-gateway.service
#   systemd-analyze verify /etc/systemd/system/cherry-gateway.service && systemctl daemon-reload
set -eu
if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX   (e.g. /opt/cherry: the unit runs PREFIX/bin/cherry-gateway)" >&2
  exit 2
fi
prefix=${1%/}
case $prefix in
  /*) ;;
  *) echo "$0: PREFIX must be an absolute path, got '$1'" >&2; exit 2 ;;
esac
case $prefix in
  *[!A-Za-z0-9/._+-]*) echo "$0: PREFIX may hold only letters, digits and / . _ + -, got '$1'" >&2; exit 2 ;;
esac
if [ ! -x "$prefix/bin/cherry-gateway" ]; then
  echo "$0: warning: $prefix/bin/cherry-gateway does not exist (yet)" >&2
fi
sed "s|@PREFIX@|$prefix|g" "$(dirname "$0")/cherry-gateway.service"
