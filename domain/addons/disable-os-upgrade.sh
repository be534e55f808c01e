#!/usr/bin/env bash
# description: Stop unattended OS package upgrades so nodes change only when the platform says so
set -euo pipefail
# @include _lib.sh

acted=0
if [[ -d "$ROOT/etc/apt/apt.conf.d" ]]; then
  ensure_file "$ROOT/etc/apt/apt.conf.d/99-primus-disable-upgrades" 'APT::Periodic::Update-Package-Lists "0";
APT::Periodic::Download-Upgradeable-Packages "0";
APT::Periodic::AutocleanInterval "0";
APT::Periodic::Unattended-Upgrade "0";'
  acted=1
fi
if [[ -z "$ROOT" && -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
  for unit in apt-daily.timer apt-daily-upgrade.timer unattended-upgrades.service \
    dnf-automatic.timer dnf-automatic-install.timer yum-cron.service; do
    systemctl cat "$unit" >/dev/null 2>&1 || continue
    acted=1
    if [[ -n "$CHECK" ]] && { systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit"; }; then
      drift "$unit is on"
    elif systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit"; then
      systemctl disable --now "$unit" >/dev/null 2>&1
      echo "disabled: $unit"
    else
      echo "unchanged: $unit is already off"
    fi
  done
fi
if ((acted == 0)); then
  echo "skipped: no automatic upgrade mechanism found; nothing to do"
  exit 0
fi
echo "done: automatic OS upgrades are off"
