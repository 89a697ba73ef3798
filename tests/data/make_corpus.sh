#!/usr/bin/env bash
# Regenerate tests/data/corpus/: real DNS servers/clients and real non-DNS software talking to port 53,
# captured on loopback inside a private network namespace (only `lo` exists there, so nothing can leave
# the machine and the host's resolver configuration is never touched).
#
# Needs root and Debian packages: tcpdump bind9 bind9-utils bind9-dnsutils unbound unbound-host knot
# knot-dnsutils nsd dnsmasq-base ldnsutils openssh-server openssh-client curl redis-server redis-tools
# postgresql chrony snmp snmpd tftp-hpa tftpd-hpa sip-tester freeradius freeradius-utils openvpn
# mosquitto mosquitto-clients coturn iodine dns2tcp dante-server socat openssl iproute2 iputils-ping
# netcat-openbsd util-linux; in the venv: dnspython, ntplib, dpkt. Install with a policy-rc.d that
# denies starts, so no daemon runs outside the namespace.
# Takes about 10 minutes; writes tests/data/corpus/{*.pcap,manifest.csv,names.tsv,labels.csv}.
#   ONLY=names bash tests/data/make_corpus.sh   reruns only corpus_names.sh (the fake Internet: net-*.pcap,
#                                               names.tsv) and relabels; the other captures are kept.
# CI never runs this; it only reads the committed captures and labels.csv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/corpus"
PY="${PYTHON:-$HERE/../../.venv/bin/python}"
NS=ppcorpus
WORK="$(mktemp -d /tmp/ppcorpus.XXXXXX)"
chmod 755 "$WORK"

cleanup() {
  # Kill whatever is still running inside our namespace, then remove it.
  if ip netns pids "$NS" >/dev/null 2>&1; then
    for pid in $(ip netns pids "$NS"); do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null || true; done
  fi
  ip netns del "$NS" 2>/dev/null || true
  for pid in $(ip netns pids "$NS-tun" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$NS-tun" 2>/dev/null || true  # corpus_names.sh's second namespace (iodined's tun device)
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"  # KEEP_WORK=1 keeps the servers' logs for debugging
}
trap cleanup EXIT

cleanup
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
# Let non-root daemons (postgres, redis users) bind port 53 -- in this namespace only.
ip netns exec "$NS" sysctl -qw net.ipv4.ip_unprivileged_port_start=0

if [ "${ONLY:-}" = names ]; then
  rm -f "$OUT"/net-*.pcap "$OUT/names.tsv"
  { echo "file,initiator_ip,label,tool,server,category,responder_ip,qname"; sed 1d "$OUT/manifest.csv" | grep -v '^net-'; } \
    > "$WORK/manifest.keep" && cp "$WORK/manifest.keep" "$OUT/manifest.csv"
else
  rm -rf "$OUT"
  mkdir -p "$OUT"
  ip netns exec "$NS" env PY="$PY" OUT="$OUT" WORK="$WORK" HERE="$HERE" bash "$HERE/corpus_scenarios.sh"
fi
ip netns exec "$NS" env PY="$PY" OUT="$OUT" WORK="$WORK/names" HERE="$HERE" \
  SKIP_NAMES="${SKIP_NAMES:-}" SKIP_IODINE="${SKIP_IODINE:-}" SKIP_DNS2TCP="${SKIP_DNS2TCP:-}" \
  SKIP_EXFIL="${SKIP_EXFIL:-}" bash -c 'mkdir -p "$WORK" && bash "$HERE/corpus_names.sh"'
"$PY" "$HERE/label_corpus.py" "$OUT"
du -sh "$OUT"
