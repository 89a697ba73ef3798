# Helpers shared by corpus_scenarios.sh and corpus_nondns.sh (sourced, inside the ppcorpus namespace).
MAN="$OUT/manifest.csv"
log() { echo "[corpus] $*" >&2; }
TCPDUMP_PID=
cap_start() {  # cap_start NAME: capture port-53 traffic on lo into $OUT/NAME.pcap
  free_port53
  CAP="$1.pcap"
  # --immediate-mode: without it packets wait in the kernel ring and are lost when we stop tcpdump.
  tcpdump -Z root -i lo -U --immediate-mode -s "${SNAPLEN:-0}" -w "$OUT/$CAP" 'port 53' 2>"$WORK/$1.tcpdump.log" &
  TCPDUMP_PID=$!
  for _ in $(seq 50); do grep -q listening "$WORK/$1.tcpdump.log" 2>/dev/null && break; sleep 0.1; done
}
cap_stop() {
  sleep 1; kill -INT "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null
  log "$CAP: $(grep captured "$WORK/${CAP%.pcap}.tcpdump.log")"
}
# rule INITIATOR LABEL TOOL SERVER [CATEGORY [RESPONDER [QNAME_REGEX]]]: see label_corpus.py for matching
rule() { echo "$CAP,$1,$2,$3,$4,${5:-},${6:-},${7:-}" >> "$MAN"; }
wait_port() {  # wait_port tcp|udp PORT
  for _ in $(seq 100); do
    if [ "$1" = tcp ]; then ss -Hltn "sport = :$2" | grep -q . && return 0
    else ss -Hlun "sport = :$2" | grep -q . && return 0; fi
    sleep 0.1
  done; log "port $1/$2 never opened"; return 1
}
stop() { for p in "$@"; do kill "$p" 2>/dev/null; done; sleep 0.5; for p in "$@"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; true; }
free_port53() {  # end leftovers of the previous scenario (forked children) that still hold port 53
  local pids
  # (127.0.0.2 is nsd, bind9's secondary, which must outlive the bind9 scenario; 127.53.x.x are the
  # servers of corpus_names.sh's fake Internet, which serve several captures)
  pids=$( { ss -Hlpun 'sport = :53'; ss -Hlptn 'sport = :53'; } | grep -v -e '127\.0\.0\.2:53' -e '127\.53\.' \
    | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u)
  [ -n "$pids" ] && { kill $pids 2>/dev/null; sleep 0.5; kill -9 $pids 2>/dev/null; }
  true
}
