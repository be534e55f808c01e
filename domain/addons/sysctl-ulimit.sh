#!/usr/bin/env bash
# description: Raise open-file and locked-memory limits for logins and system services (RDMA needs memlock)
set -euo pipefail
# @include _lib.sh

ensure_file "$ROOT/etc/security/limits.d/90-primus.conf" "*    soft nofile   1048576
*    hard nofile   1048576
*    soft memlock  unlimited
*    hard memlock  unlimited
root soft nofile   1048576
root hard nofile   1048576
root soft memlock  unlimited
root hard memlock  unlimited"
ensure_file "$ROOT/etc/systemd/system.conf.d/90-primus-limits.conf" "[Manager]
DefaultLimitNOFILE=1048576
DefaultLimitMEMLOCK=infinity"
echo "done: limits apply to new logins, and to services after the next reboot or systemctl daemon-reexec"
