#!/usr/bin/env bash
# Regenerate tests/data/shift/: the shifted, multi-day evaluation corpus (docs/corpus.md). Real resolvers,
# authoritative servers, clients and tunnel tools in private network namespaces (only `lo` exists there),
# captured with tcpdump on loopback, one capture per scenario per day, labelled from a manifest of rules.
# The three splits run at once, each in its own namespace (ppc2-development, ppc2-validation,
# ppc2-acceptance), their three days one after the other; every day starts its servers afresh.
#
# Needs root and Debian packages: tcpdump bind9 bind9-utils bind9-dnsutils unbound knot knot-dnsutils nsd
# knot-resolver pdns-recursor pdns-server pdns-backend-bind dnsmasq-base ldnsutils nmap iodine dns2tcp socat
# curl netcat-openbsd xxd iproute2 util-linux spamassassin spamd; in the project venv: dnspython, dpkt; pydnst
# is installed from PyPI into a venv of its own ($TOOLS, default /tmp/ppc2-tools). Install daemons with a
# policy-rc.d that denies starts, so nothing runs outside the namespaces.
# Takes about 30 minutes on 2 cores; writes tests/data/shift/{<day>/<HHMM>-<scenario>.pcap,manifest.csv,
# names.tsv.gz,zones.tsv,days.tsv,labels.csv.gz}. CI never runs this; it reads the committed captures and labels.csv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/shift"
PY="${PYTHON:-$HERE/../../.venv/bin/python}"
TOOLS="${TOOLS:-/tmp/ppc2-tools}"
WORK="$(mktemp -d /tmp/ppc2.XXXXXX)"
chmod 755 "$WORK"
SPLITS=(development validation acceptance)
T0=$(date +%s)

cleanup() {
  local s ns pid
  for s in "${SPLITS[@]}"; do
    for ns in "ppc2-$s" "ppc2-$s-tun"; do
      if ip netns pids "$ns" >/dev/null 2>&1; then
        for pid in $(ip netns pids "$ns"); do kill "$pid" 2>/dev/null || true; done
        sleep 1
        for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
      fi
      ip netns del "$ns" 2>/dev/null || true
    done
  done
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
cleanup

[ -x "$TOOLS/bin/python" ] || { python3 -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q pydnst==1.0.4; }
# RUN_SPLITS="acceptance": capture only these splits' days again; the other splits' captures and rules stay
RUN_SPLITS="${RUN_SPLITS:-${SPLITS[*]}}"
runs() { [[ " $RUN_SPLITS " == *" $1 "* ]]; }
if [ -z "${ONLY:-}" ] && [ "$RUN_SPLITS" = "${SPLITS[*]}" ]; then
  rm -rf "$OUT"
elif [ -z "${ONLY:-}" ]; then  # keep the other splits' rules; drop every day of the rerun splits (old days too)
  keep=$(awk -F'\t' -v r=" $RUN_SPLITS " 'NR > 1 && index(r, " " $2 " ") == 0 { print $1 }' "$OUT/days.tsv")
  { head -1 "$OUT/manifest.csv"; grep -F -f <(printf '%s/\n' $keep) "$OUT/manifest.csv"; } > "$WORK/kept.csv"
  for d in "$OUT"/20*/; do d=$(basename "$d"); grep -qx "$d" <<<"$keep" || rm -rf "${OUT:?}/$d"; done
fi
mkdir -p "$OUT" "$WORK/plan"
"$PY" "$HERE/shift_plan.py" setup "$WORK/plan" "$OUT"
# NSEC3-signed zones (salt -, 0 extra iterations, as RFC 9276 advises); their DS records are the validating
# resolver's trust anchors (the fake root is unsigned)
: > "$WORK/plan/trust-anchors.ds"
for z in $("$PY" -c "import sys; sys.path.insert(0, '$HERE'); import shift_plan; print(' '.join(shift_plan.NSEC3_ZONES))"); do
  (cd "$WORK/plan/zones/sld" && dnssec-keygen -q -K "$WORK/plan" -a ECDSAP256SHA256 "$z" >/dev/null \
    && dnssec-keygen -q -K "$WORK/plan" -a ECDSAP256SHA256 -f KSK "$z" >/dev/null \
    && dnssec-signzone -q -S -K "$WORK/plan" -d "$WORK/plan" -3 - -H 0 -o "$z" -f "$z.zone.signed" "$z.zone" >/dev/null)
  cat "$WORK/plan/dsset-$z." >> "$WORK/plan/trust-anchors.ds"
done
SA_OK=
if [ -z "${NO_SPAMASSASSIN:-}" ] && command -v spamassassin >/dev/null; then SA_OK=1; fi

run_split() {  # run_split INDEX
  local si=$1 s=${SPLITS[$1]} ns="ppc2-${SPLITS[$1]}" di day
  ip netns add "$ns"; ip netns exec "$ns" ip link set lo up
  for di in 0 1 2; do
    day=$(sed -n "$((si * 3 + di + 1))p" "$WORK/plan/days.list"); di=$((10#${day:8:2} - 1))  # shift_plan.DAY_INDEX
    mkdir -p "$WORK/$s-$day"
    ip netns exec "$ns" nice -n 10 env PY="$PY" OUT="$OUT" WORK="$WORK/$s-$day" HERE="$HERE" PLAN="$WORK/plan" DAY="$day" \
      DI=$di SPLIT="$s" SI=$si TOOLS="$TOOLS" NSN="$ns" SA_OK="$SA_OK" ONLY_SCENARIOS="${ONLY:-}" bash "$HERE/shift_day.sh" \
      > "$WORK/$s-$day.log" 2>&1 || echo "[shift] $day failed, see $WORK/$s-$day.log" >&2
    grep '^\[corpus\]' "$WORK/$s-$day.log" >&2 || true
  done
  ip netns del "$ns"
}
pids=()
for si in 0 1 2; do runs "${SPLITS[$si]}" && { run_split $si & pids+=($!); }; done
wait "${pids[@]}"
HEAD="file,initiator_ip,label,tool,server,category,responder_ip,qname,client,leg,family,scenario"
if [ -z "${ONLY:-}" ]; then
  { echo "$HEAD"; if [ -f "$WORK/kept.csv" ]; then sed 1d "$WORK/kept.csv"; fi
    for d in $(cat "$WORK/plan/days.list"); do
      if [ -f "$OUT/$d/manifest.csv" ]; then sed 1d "$OUT/$d/manifest.csv"; rm "$OUT/$d/manifest.csv"; fi
    done; } > "$WORK/manifest.csv"
  mv "$WORK/manifest.csv" "$OUT/manifest.csv"
else  # the rerun scenarios' rules replace theirs
  cat "$OUT"/*/manifest.only.csv | grep -v "^file," > "$WORK/new.csv"
  cut -d, -f1 "$WORK/new.csv" | sort -u > "$WORK/new.files"
  { echo "$HEAD"; sed 1d "$OUT/manifest.csv" | awk -F, 'NR == FNR { f[$1] = 1; next } !($1 in f)' "$WORK/new.files" -
    cat "$WORK/new.csv"; } > "$WORK/manifest.csv"
  mv "$WORK/manifest.csv" "$OUT/manifest.csv"; rm -f "$OUT"/*/manifest.only.csv
fi
rm -f "$OUT/labels.csv.gz" "$OUT/names.tsv.gz"
"$PY" "$HERE/label_corpus.py" "$OUT"
gzip -n -9 "$OUT/labels.csv" "$OUT/names.tsv"  # (tens of MB as text; evaluate and corpus_splits.py read .csv.gz)
du -sh "$OUT"
echo "[shift] generated in $(( $(date +%s) - T0 )) s" >&2
