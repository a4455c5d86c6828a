#!/usr/bin/env bash
# Raise the Linux limits that bound a large connection-count run, explaining each one.
# Without --apply it only prints what it would change. Needs root to apply. The settings last
# until reboot; nothing is written to /etc.
#
#   scripts/tune-linux.sh            # show current values and the proposed ones
#   sudo scripts/tune-linux.sh --apply
set -euo pipefail

apply=false
[ "${1:-}" = "--apply" ] && apply=true

# name | proposed value | why
settings=(
  "fs.nr_open|1048576|the ceiling for any process's RLIMIT_NOFILE: one descriptor per socket"
  "fs.file-max|2097152|open files in the whole system, clients and servers together"
  "net.ipv4.ip_local_port_range|1024 65000|ephemeral ports: one per client connection to one server address"
  "net.core.somaxconn|65535|the listen backlog cap: a fast ramp needs room before accept() catches up"
  "net.ipv4.tcp_max_syn_backlog|65535|half-open handshakes queued during a fast ramp"
  "kernel.pid_max|4194304|blocking model: every thread takes a pid"
  "kernel.threads-max|4194304|blocking model: threads in the whole system"
  "vm.max_map_count|1048576|blocking model: each thread stack is a mapping (plus its guard page)"
  "net.core.netdev_max_backlog|16384|packets queued per CPU on their way in: loopback handshakes arrive in bursts during a ramp"
)
# Connection tracking, where it is loaded, keeps an entry per connection (both ends of a loopback
# connection share one) and drops new packets once its table is full.
if [ -e /proc/sys/net/netfilter/nf_conntrack_max ]; then
  settings+=("net.netfilter.nf_conntrack_max|2097152|connection tracking is loaded: a full table drops new connections' packets (tracked now: $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo '?'))")
fi

for entry in "${settings[@]}"; do
  IFS='|' read -r name value why <<<"$entry"
  current=$(sysctl -n "$name" 2>/dev/null | tr '\t' ' ' || echo "unreadable")
  # Never lower a single-number limit that is already higher.
  if [[ "$current" =~ ^[0-9]+$ && "$value" =~ ^[0-9]+$ ]] && (( current >= value )); then
    printf '%-30s now %-14s (enough)                 %s\n' "$name" "$current" "$why"
    continue
  fi
  if $apply; then
    if sysctl -q -w "$name=$value"; then
      printf '%-30s %s -> %-14s  %s\n' "$name" "$current" "$(sysctl -n "$name" | tr '\t' ' ')" "$why"
    else
      echo "$name: could not set it to $value (container or missing privilege?)"
    fi
  else
    printf '%-30s now %-14s proposed %-14s  %s\n' "$name" "$current" "$value" "$why"
  fi
done

echo
echo "RLIMIT_NOFILE (per process, soft/hard): $(ulimit -Sn)/$(ulimit -Hn)"
echo "  c10k raises its soft limit to the hard one by itself. To lift the hard limit for a shell:"
echo "  'ulimit -Hn 1048576' as root, or 'LimitNOFILE=1048576' in a systemd unit,"
echo "  or '* hard nofile 1048576' in /etc/security/limits.conf for new logins."
echo "  Where the hard limit cannot be raised, c10k load splits a large run over several processes."
$apply || echo "(nothing changed: run with --apply as root to set the values above)"
