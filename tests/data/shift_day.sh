#!/usr/bin/env bash
# One day of the shifted corpus, INSIDE a private namespace (make_shift_corpus.sh runs one namespace per split,
# its days one after the other). Starts the fake Internet afresh (so every day begins with cold caches), runs
# every scenario of the day with one capture each, writes $OUT/$DAY/<scenario>.pcap (placed on its day by
# retime.py) and $OUT/$DAY/manifest.csv: rules "file,initiator_ip,label,tool,server,category,responder_ip,qname,
# client,leg,family,scenario" for label_corpus.py.
#
# Addresses (inside the namespace; shift_plan.py holds the same table):
#   127.53.0.1 nsd root+arpa   127.53.0.2 knot TLDs   127.53.0.3 bind9 / .4 PowerDNS / .5 knot / .6 nsd: zones
#   resolver k (1 unbound validating, 2 bind9, 3 unbound 0x20, 4 kresd, 5 pdns-recursor, 6 dnsmasq -> unbound,
#   7 dnsmasq "cluster DNS" -> bind9) listens on 127.53.53.k (clients that bind a source) and 127.53.N.k
#   (N = 54 host, 55 nslookup, 56 getent, 58 nmap, 59 spamassassin, 60 pydnst, 61 iodine, 62 dns2tcp: these
#   cannot bind, so the kernel sends from the address they talk to), and sends from 127.53.53.(100+k).
#   Tunnel servers: 127.53.9.1 iodined, .9.2 dns2tcpd, .9.3/.9.4/.9.6 nsd (dig exfil and low-and-slow /
#   spread / beacons), .9.5 the pydnst C2 server.
set -uo pipefail
: "${PY:?}" "${OUT:?}" "${WORK:?}" "${HERE:?}" "${PLAN:?}" "${DAY:?}" "${DI:?}" "${SPLIT:?}" "${SI:?}" "${TOOLS:?}"
cd "$WORK"
source "$HERE/corpus_lib.sh"
export SNAPLEN=330
P="$PLAN/plan/$DAY"
mkdir -p "$OUT/$DAY"
MANI="$OUT/$DAY/manifest.csv"
# ONLY_SCENARIOS="a b": rerun just these scenarios of the day (their rules go to manifest.only.csv, which
# make_shift_corpus.sh merges); "tunnels" stands for every tunnel scenario (shift_tunnels.sh)
[ -n "${ONLY_SCENARIOS:-}" ] && MANI="$OUT/$DAY/manifest.only.csv"
wanted() { [ -z "${ONLY_SCENARIOS:-}" ] || [[ " $ONLY_SCENARIOS " == *" $1 "* ]]; }
echo "file,initiator_ip,label,tool,server,category,responder_ip,qname,client,leg,family,scenario" > "$MANI"
RESP_BYTES=64  # answers keep 64 bytes of DNS payload (what the archive keeps); packets stored as raw IP

declare -A RK=([unbound]=1 [bind9]=2 [unbound-0x20]=3 [kresd]=4 [pdns-recursor]=5 [dnsmasq]=6 [dnsmasq-k8s]=7)
declare -A RIMPL=([unbound]=unbound [bind9]=bind9 [unbound-0x20]=unbound [kresd]=kresd [pdns-recursor]=pdns-recursor
  [dnsmasq]=dnsmasq [dnsmasq-k8s]=dnsmasq)
declare -A NB=([host]=54 [nslookup]=55 [getent]=56 [nmap]=58 [spamassassin]=59 [pydnst]=60 [iodine]=61 [dns2tcp]=62)
declare -A BN=([dig]=100 [kdig]=101 [drill]=102 [dnspython]=103 [delv]=106)
AUTHS="127.53.0.1:nsd 127.53.0.2:knot 127.53.0.3:bind9 127.53.0.4:pdns 127.53.0.5:knot 127.53.0.6:nsd"
raddr() { echo "127.53.${NB[${2:-dig}]:-53}.${RK[$1]}"; }  # raddr RESOLVER [CLIENT]
rout() { echo "127.53.53.$((100 + RK[$1]))"; }
caddr() { echo "127.53.${BN[$1]}.$2"; }  # caddr CLIENT N: a source address of a binding client

for k in 1 2 3 4 5 6 7; do
  for n in 53 54 55 56 58 59 60 61 62; do ip addr add 127.53.$n.$k/32 dev lo 2>/dev/null; done
  ip addr add 127.53.53.$((100 + k))/32 dev lo 2>/dev/null
done
for a in 127.53.0.{1..6} 127.53.9.{1..6}; do ip addr add $a/32 dev lo 2>/dev/null; done
for n in 100 101 102 103 106 110 120 122; do for k in $(seq 1 40); do ip addr add 127.53.$n.$k/32 dev lo 2>/dev/null; done; done
for k in $(seq 1 64); do ip addr add 127.53.121.$k/32 dev lo 2>/dev/null; done

# ---------------------------------------------------------------- manifest rules
M() {  # M FILE INITIATOR RESPONDER LABEL TOOL SERVER CATEGORY QNAME CLIENT LEG FAMILY SCENARIO
  echo "$1,$2,$4,$5,$6,$7,$3,$8,$9,${10},${11},${12}" >> "$MANI"
}
INFRA='\.|[^.]+|(.+\.)?(dnshost\.net|root-servers\.net|gtld-servers\.net)'
upstream_rules() {  # upstream_rules FILE CATEGORY SCENARIO: every resolver's and forwarder's own queries
  local f=$1 cat=$2 scen=$3 res a
  for res in unbound bind9 unbound-0x20 kresd pdns-recursor; do
    for a in $AUTHS; do
      M "$f" "$(rout $res)" "${a%:*}" dns "${RIMPL[$res]}" "${a#*:}" "$cat" '' "${RIMPL[$res]}" upstream '' "$scen"
      M "$f" "$(rout $res)" "${a%:*}" dns "${RIMPL[$res]}" "${a#*:}" ordinary "$INFRA" "${RIMPL[$res]}" upstream '' "$scen"
    done
  done
  M "$f" "$(rout dnsmasq)" "$(raddr unbound)" dns dnsmasq unbound "$cat" '' dnsmasq upstream '' "$scen"
  M "$f" "$(rout dnsmasq-k8s)" "$(raddr bind9)" dns dnsmasq bind9 "$cat" '' dnsmasq upstream '' "$scen"
}
stub_rule() {  # stub_rule FILE CLIENT RESOLVER CATEGORY SCENARIO [INITIATOR]
  local f=$1 c=$2 res=$3 ini=${6:-}
  [ -n "$ini" ] || if [ -n "${NB[$c]:-}" ]; then ini=$(raddr "$res" "$c"); else ini="127.53.${BN[$c]}.*"; fi
  M "$f" "$ini" "$(raddr "$res" "$c")" dns "$c" "${RIMPL[$res]}" "$4" '' "$c" stub '' "$5"
}

# ---------------------------------------------------------------- servers
Z="$PLAN/zones"
start_servers() {
  mkdir -p "$WORK/s" && cd "$WORK/s"
  cat > nsdroot.conf <<CONF
server:
  ip-address: 127.53.0.1
  port: 53
  username: ""
  chroot: ""
  zonesdir: "$Z"
  database: ""
  pidfile: "$WORK/s/nsdroot.pid"
  xfrdfile: "$WORK/s/nsdroot.xfrd"
  zonelistfile: "$WORK/s/nsdroot.zl"
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "root.zone"
zone:
  name: "arpa"
  zonefile: "arpa.zone"
CONF
  { echo "server:"; echo "  ip-address: 127.53.0.6"; echo "  port: 53"; echo '  username: ""'; echo '  chroot: ""'
    echo "  zonesdir: \"$Z/sld\""; echo '  database: ""'; echo "  pidfile: \"$WORK/s/nsdauth.pid\""
    echo "  xfrdfile: \"$WORK/s/nsdauth.xfrd\""; echo "  zonelistfile: \"$WORK/s/nsdauth.zl\""; echo "  verbosity: 0"
    echo "remote-control:"; echo "  control-enable: no"
    while read -r d; do echo "zone:"; echo "  name: \"$d\""; echo "  zonefile: \"$d.zone\""; done < "$PLAN/zones-nsd.list"
  } > nsdauth.conf
  # nsd for the scripted tunnels: every split's tunnel zones, wildcards, on three addresses
  { echo "server:"; for a in 127.53.9.3 127.53.9.4 127.53.9.6; do echo "  ip-address: $a"; done
    echo "  port: 53"; echo '  username: ""'; echo '  chroot: ""'
    echo "  zonesdir: \"$PLAN/tunzones\""; echo '  database: ""'; echo "  pidfile: \"$WORK/s/nsdtun.pid\""
    echo "  xfrdfile: \"$WORK/s/nsdtun.xfrd\""; echo "  zonelistfile: \"$WORK/s/nsdtun.zl\""; echo "  verbosity: 0"
    echo "remote-control:"; echo "  control-enable: no"
    for f in "$PLAN"/tunzones/*.zone; do d=$(basename "$f" .zone); echo "zone:"; echo "  name: \"$d\""; echo "  zonefile: \"$d.zone\""; done
  } > nsdtun.conf
  for inst in tld:127.53.0.2:knot-tld.conf auth:127.53.0.5:knot-auth.conf; do
    IFS=: read -r nm addr zl <<<"$inst"; mkdir -p "$WORK/s/knot-$nm"
    { echo "server:"; echo "  listen: $addr@53"; echo "  rundir: \"$WORK/s/knot-$nm\""; echo "  user: root"
      echo "database:"; echo "  storage: \"$WORK/s/knot-$nm\""; echo "template:"; echo "  - id: default"
      echo "    storage: \"$WORK/s/knot-$nm\""; echo "log:"; echo "  - target: stderr"; echo "    any: error"
      cat "$PLAN/$zl"; } > "knot-$nm.conf"
  done
  mkdir -p bindauth bindres
  { echo "options { directory \"$WORK/s/bindauth\"; pid-file \"$WORK/s/bindauth/named.pid\"; session-keyfile \"$WORK/s/bindauth/s.key\";"
    echo "  listen-on port 53 { 127.53.0.3; }; listen-on-v6 { none; }; recursion no; dnssec-validation no; notify no;"
    echo "  allow-query { any; }; minimal-responses yes; };"; echo "controls { };"
    while read -r d; do
      f="$Z/sld/$d.zone"; [ -f "$f.signed" ] && f="$f.signed"
      echo "zone \"$d\" { type primary; file \"$f\"; };"; done < "$PLAN/zones-bind9.list"
  } > bindauth/named.conf
  # PowerDNS authoritative, bind backend (reads the same zone files)
  mkdir -p pdns
  while read -r d; do echo "zone \"$d\" { type master; file \"$Z/sld/$d.zone\"; };"; done < "$PLAN/zones-pdns.list" > pdns/named.conf
  local la; la() { local k=$1 sep=$2 out="" n; for n in 53 54 55 56 58 59 60 61 62; do out="$out${out:+$sep}127.53.$n.$k"; done; echo "$out"; }
  cat > bindres/named.conf <<CONF
options {
  directory "$WORK/s/bindres"; pid-file "$WORK/s/bindres/named.pid"; session-keyfile "$WORK/s/bindres/s.key";
  listen-on port 53 { $(la 2 '; '); }; listen-on-v6 { none; };
  recursion yes; allow-recursion { any; }; allow-query { any; }; allow-query-cache { any; };
  dnssec-validation no; empty-zones-enable no; notify no; query-source address 127.53.53.102;
};
controls { };
zone "." { type hint; file "$PLAN/root.hints"; };
CONF
  for inst in 1:unbound:no 3:unbound0x20:yes; do
    IFS=: read -r k nm caps <<<"$inst"
    { echo "server:"; for a in $(la $k ' '); do echo "  interface: $a"; done
      echo "  port: 53"; echo "  outgoing-interface: 127.53.53.$((100 + k))"; echo "  do-daemonize: no"; echo '  username: ""'
      echo '  chroot: ""'; echo "  directory: \"$WORK/s\""; echo "  pidfile: \"$WORK/s/$nm.pid\""; echo "  use-syslog: no"
      echo "  verbosity: 0"; echo "  num-threads: 1"; echo "  access-control: 127.0.0.0/8 allow"; echo "  do-not-query-localhost: no"
      echo "  do-ip6: no"; echo "  root-hints: \"$PLAN/root.hints\""; echo "  use-caps-for-id: $caps"; echo "  qname-minimisation: yes"
      echo "  unblock-lan-zones: yes"; echo "  insecure-lan-zones: yes"
      if [ "$k" = 1 ]; then echo '  module-config: "validator iterator"'; echo "  trust-anchor-file: \"$PLAN/trust-anchors.ds\""
        echo "  val-log-level: 0"; else echo '  module-config: "iterator"'; fi
    } > "$nm.conf"
  done
  mkdir -p kresd
  { for a in $(la 4 ' '); do echo "net.listen('$a', 53, { kind = 'dns' })"; done
    echo "net.outgoing_v4('127.53.53.104')"; echo "net.ipv6 = false"
    echo "modules.unload('detect_time_skew')"; echo "modules.unload('priming')" ; echo "trust_anchors.remove('.')"
    echo "modules.load('hints > iterate')"; echo "hints.root({['a.root-servers.net.'] = '127.53.0.1'})"; echo "cache.size = 50 * MB"
  } > kresd/config
  mkdir -p pdnsrec
  cat > pdnsrec/recursor.conf <<CONF
local-address=$(la 5 ',')
local-port=53
query-local-address=127.53.53.105
hint-file=$WORK/s/pdnsrec/root.hints
allow-from=127.0.0.0/8
dnssec=off
socket-dir=$WORK/s/pdnsrec
daemon=no
write-pid=no
threads=1
loglevel=3
security-poll-suffix=
dont-query=
CONF
  cp "$PLAN/root.hints" pdnsrec/root.hints
  nsd -d -c nsdroot.conf > nsdroot.log 2>&1 & PIDS=($!)
  nsd -d -c nsdauth.conf > nsdauth.log 2>&1 & PIDS+=($!)
  nsd -d -c nsdtun.conf > nsdtun.log 2>&1 & PIDS+=($!)
  knotd -c knot-tld.conf > knot-tld.log 2>&1 & PIDS+=($!)
  knotd -c knot-auth.conf > knot-auth.log 2>&1 & PIDS+=($!)
  named -4 -g -c bindauth/named.conf > bindauth.log 2>&1 & PIDS+=($!)
  pdns_server --no-config --daemon=no --guardian=no --launch=bind --bind-config="$WORK/s/pdns/named.conf" \
    --local-address=127.53.0.4 --local-port=53 --socket-dir="$WORK/s/pdns" --write-pid=no --loglevel=3 \
    > pdns.log 2>&1 & PIDS+=($!)
  for a in 127.53.0.1 127.53.0.2 127.53.0.3 127.53.0.4 127.53.0.5 127.53.0.6 127.53.9.3; do wait_addr $a; done
  named -4 -g -c bindres/named.conf > bindres.log 2>&1 & PIDS+=($!)
  unbound -d -c unbound.conf > unbound.log 2>&1 & PIDS+=($!)
  unbound -d -c unbound0x20.conf > unbound0x20.log 2>&1 & PIDS+=($!)
  (cd kresd && exec kresd -n -q -c config . > ../kresd.log 2>&1) & PIDS+=($!)
  pdns_recursor --config-dir="$WORK/s/pdnsrec" > pdnsrec.log 2>&1 & PIDS+=($!)
  for k in 1 2 3 4 5; do wait_addr 127.53.53.$k; done
  dnsmasq -k --no-resolv --no-hosts --bind-interfaces --port=53 --user=root --pid-file="$WORK/s/dnsmasq.pid" \
    $(for a in $(la 6 ' '); do printf -- '--listen-address=%s ' $a; done) --server=127.53.53.1@127.53.53.106 \
    --cache-size=1000 > dnsmasq.log 2>&1 & PIDS+=($!)
  # the cluster's DNS: its services from a hosts file, cluster.local answered here, the rest forwarded
  awk -F'\t' '$5 ~ /^svc:/ { n = split($3, p, "."); ns = substr($5, 5)
      fq = (n == 1) ? $3 "." ns ".svc.cluster.local" : (n == 2) ? $3 ".svc.cluster.local" : $3 ".cluster.local"
      printf "10.96.%d.%d %s\n", NR % 250, (NR * 7) % 250 + 1, fq }' "$P/k8s-search.tsv" > k8s.hosts
  dnsmasq -k --no-resolv --no-hosts --bind-interfaces --port=53 --user=root --pid-file="$WORK/s/dnsmasq-k8s.pid" \
    $(for a in $(la 7 ' '); do printf -- '--listen-address=%s ' $a; done) --server=127.53.53.2@127.53.53.107 \
    --local=/cluster.local/ --addn-hosts="$WORK/s/k8s.hosts" --cache-size=1000 > dnsmasq-k8s.log 2>&1 & PIDS+=($!)
  wait_addr 127.53.53.6; wait_addr 127.53.53.7
  cd "$WORK"
}
wait_addr() { for _ in $(seq 150); do ss -Hlun 'sport = :53' | grep -q "$1:53" && return 0; sleep 0.1; done; log "$DAY: $1:53 never opened"; return 1; }

# ---------------------------------------------------------------- captures
CAPS=()
cap() {  # cap HH:MM SCENARIO [FILTER]: capture this scenario (port 53 [and FILTER]) into <day>/<HHMM>-<scenario>.pcap,
  # starting at HH:MM on its day (the time prefix makes a folder's files sort in time order, as rotated captures do)
  SLOT=$1; SCEN=$2; F="$DAY/${1/:/}-$2.pcap"; local filt="port 53${3:+ and ($3)}"
  tcpdump -Z root -i lo -U --immediate-mode -s $SNAPLEN -w "$WORK/$SCEN.raw.pcap" "$filt" 2>"$WORK/$SCEN.tcpdump.log" & TCPDUMP_PID=$!
  for _ in $(seq 50); do grep -q listening "$WORK/$SCEN.tcpdump.log" 2>/dev/null && break; sleep 0.1; done
}
uncap() {  # uncap [SPAN_SECONDS]: stop, place the capture on its day (pauses stretched to SPAN), cut answers;
  # SLOW_TO=FILE: write it there (the slow tunnels, merged into one capture afterwards)
  sleep 1; kill -INT "$TCPDUMP_PID"; wait "$TCPDUMP_PID" 2>/dev/null
  log "$DAY $SCEN: $(grep -o '[0-9]* packets captured' "$WORK/$SCEN.tcpdump.log")"
  "$PY" "$HERE/retime.py" "$WORK/$SCEN.raw.pcap" "${SLOW_TO:-$OUT/$F}" --start "${DAY}T$SLOT:00" --span "${1:-0}" \
    --resp-bytes $RESP_BYTES --raw
  rm -f "$WORK/$SCEN.raw.pcap"
}

# ---------------------------------------------------------------- clients
run_lines() {  # run_lines FILE HOSTNUM: plan lines "client qtype name resolver flags" of one client
  local f=$1 n=${2:-1} c _c qt name res fl chunk l a args o
  c=$(head -1 "$f" | cut -f1)
  case $c in
    dig)
      awk -F'\t' 'BEGIN { split("unbound 1 bind9 2 unbound-0x20 3 kresd 4 pdns-recursor 5 dnsmasq 6 dnsmasq-k8s 7", a, " "); for (i = 1; i < 14; i += 2) k[a[i]] = a[i + 1] }
        { o = "@127.53.53." k[$4] " " $3 " " $2 " +tries=1 +time=3"; if ($5 ~ /do/) o = o " +dnssec"; if ($5 ~ /tcp/) o = o " +tcp"
          print o }' "$f" > "$f.batch"
      dig -b "$(caddr dig $n)" -f "$f.batch" >/dev/null 2>&1;;
    kdig)
      while mapfile -t -n 20 chunk && [ ${#chunk[@]} -gt 0 ]; do
        args=(); for l in "${chunk[@]}"; do IFS=$'\t' read -r _c qt name res fl <<<"$l"
          a=("@$(raddr "$res")" "$name" "$qt" +timeout=3 +retry=0); [[ $fl == *do* ]] && a+=(+dnssec); [[ $fl == *tcp* ]] && a+=(+tcp)
          args+=("${a[@]}"); done
        kdig -b "$(caddr kdig $n)" "${args[@]}" >/dev/null 2>&1
      done < "$f";;
    drill)
      while IFS=$'\t' read -r _c qt name res fl; do
        o=(); [[ $fl == *do* ]] && o+=(-D); [[ $fl == *tcp* ]] && o+=(-t)
        drill -I "$(caddr drill $n)" "${o[@]}" "$name" @"$(raddr "$res")" "$qt" </dev/null >/dev/null 2>&1
      done < "$f";;
    dnspython)
      awk -F'\t' 'BEGIN { split("unbound 1 bind9 2 unbound-0x20 3 kresd 4 pdns-recursor 5 dnsmasq 6 dnsmasq-k8s 7", a, " "); for (i = 1; i < 14; i += 2) k[a[i]] = a[i + 1] }
        { print $2 "\t" $3 "\t127.53.53." k[$4] "\t" $5 }' "$f" > "$f.py"
      "$PY" "$HERE/names.py" query "$(caddr dnspython $n)" "$f.py" 2>/dev/null;;
    delv)
      while IFS=$'\t' read -r _c qt name res fl; do
        timeout 10 delv -b "$(caddr delv $n)" @"$(raddr "$res")" -i "$name" "$qt" </dev/null >/dev/null 2>&1
      done < "$f";;
    host)
      while IFS=$'\t' read -r _c qt name res fl; do
        timeout 10 host -W 3 -t "$qt" "$name" "$(raddr "$res" host)" </dev/null >/dev/null 2>&1
      done < "$f";;
    nslookup)
      while IFS=$'\t' read -r _c qt name res fl; do
        timeout 10 nslookup -timeout=3 -type="$qt" "$name" "$(raddr "$res" nslookup)" </dev/null >/dev/null 2>&1
      done < "$f";;
    getent)  # glibc's resolver, a resolv.conf of our own bind-mounted in a private mount namespace, per resolver
      for res in $(cut -f4 "$f" | sort -u); do
        printf 'nameserver %s\nsearch office.%s\noptions ndots:2 timeout:2 attempts:1\n' "$(raddr "$res" getent)" "$SITE" > "$WORK/resolv-$res.conf"
        awk -F'\t' -v r="$res" '$4 == r { print $3 }' "$f" > "$f.$res.list"
        unshare -m bash -c "mount --bind '$WORK/resolv-$res.conf' /etc/resolv.conf &&
          while read -r n; do getent ahosts \"\$n\" >/dev/null; done < '$f.$res.list'"
      done;;
  esac
}
run_background() {  # every client at once; binding clients as several hosts, the others as one host each
  local f="$P/background.tsv" c n jobs=() i
  for c in dig kdig drill dnspython delv host nslookup getent; do
    awk -F'\t' -v c=$c '$1 == c' "$f" > "$WORK/bg-$c.tsv"
    [ -s "$WORK/bg-$c.tsv" ] || continue
    n=$(case $c in dig) echo 10;; dnspython) echo 8;; kdig) echo 4;; drill|delv) echo 2;; *) echo 1;; esac)
    for i in $(seq 1 $n); do
      awk -v n=$n -v i=$i 'NR % n == i - 1' "$WORK/bg-$c.tsv" > "$WORK/bg-$c-$i.tsv"
      [ -s "$WORK/bg-$c-$i.tsv" ] && { run_lines "$WORK/bg-$c-$i.tsv" $i & jobs+=($!); }
    done
  done
  wait "${jobs[@]}"
}

SITE=$(awk -F'\t' '$2 == "ordinary" && $3 == "'"$SPLIT"'" { print $1; exit }' "$OUT/zones.tsv")

# ---------------------------------------------------------------- the day
start_servers
# a resolver in service has long since primed its root and top-level delegations: do that before capturing
for k in 1 2 3 4 5 6; do for n in . com net org; do dig -b 127.53.100.40 @127.53.53.$k "$n" NS +tries=2 +time=3 >/dev/null 2>&1; done; done
log "$DAY ($SPLIT): servers up"
if wanted background; then

cap 07:00 background
run_background
for c in dig kdig drill dnspython delv host nslookup getent; do
  for res in unbound bind9 unbound-0x20 kresd pdns-recursor dnsmasq; do stub_rule "$F" $c $res ordinary background; done
done
upstream_rules "$F" ordinary background
uncap
fi

i=0
for scen in $(ls "$P" | sed -n 's/\.tsv$//p' | grep -v '^background$'); do
  f="$P/$scen.tsv"; c=$(head -1 "$f" | cut -f1); res=$(head -1 "$f" | cut -f4)
  cat_=$(awk -F'\t' -v s="$scen" '$2 == s { print $3; exit }' "$OUT/names.tsv" 2>/dev/null)
  cat_=${cat_:-$scen}
  if ! wanted "$scen"; then i=$((i + 1)); continue; fi
  cap "$(printf '%02d:%02d' $((7 + (10 + i * 10) / 60)) $(((10 + i * 10) % 60)))" "$scen"  # 07:10, 07:20, ...
  case $scen in
    reverse-sweep)  # nmap's own parallel reverse resolver, pointed at the day's resolver
      nmap -sL -n0 >/dev/null 2>&1; timeout 300 nmap -sL -R --dns-servers "$(raddr "$res" nmap)" "$(cut -f3 "$f")" >/dev/null 2>&1
      stub_rule "$F" nmap "$res" "$cat_" "$scen";;
    k8s-search)
      for ns in $(cut -f5 "$f" | cut -d: -f2 | sort -u); do
        printf 'nameserver %s\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:1\n' \
          "$(raddr dnsmasq-k8s getent)" "$ns" > "$WORK/resolv-k8s.conf"
        awk -F'\t' -v ns="$ns" '$5 ~ ":" ns "$" { print $3 }' "$f" > "$WORK/k8s-$ns.list"
        unshare -m bash -c "mount --bind '$WORK/resolv-k8s.conf' /etc/resolv.conf &&
          while read -r n; do getent ahosts \"\$n\" >/dev/null; done < '$WORK/k8s-$ns.list'"
      done
      stub_rule "$F" getent dnsmasq-k8s "$cat_" "$scen";;
    mail-dnsbl)
      if [ -n "${SA_OK:-}" ]; then  # SpamAssassin's own network tests on a day of incoming mail (shift_mail.py)
        "$PY" "$HERE/shift_mail.py" $((DI * 1000 + 7)) 25 "$WORK/mail.mbox"
        timeout 900 spamassassin -t --mbox --cf="dns_server $(raddr "$res" spamassassin)" --cf='dns_available yes' \
          < "$WORK/mail.mbox" > "$WORK/spamassassin.out" 2>&1; c=spamassassin
      else sed 's/^spamassassin/dnspython/' "$f" > "$WORK/dnsbl.tsv"; run_lines "$WORK/dnsbl.tsv" 1; c=dnspython; fi
      stub_rule "$F" $c "$res" "$cat_" "$scen"
      # URIBL lookups (domains from the mail bodies) are their own category, on both legs
      URI='(.+\.)?(multi\.uribl\.com|multi\.surbl\.org|dbl\.spamhaus\.org|dob\.sibl\.support-intelligence\.net|fresh\.fmb\.la)'
      M "$F" "$(if [ $c = spamassassin ]; then raddr "$res" spamassassin; else echo "127.53.${BN[$c]}.*"; fi)" "$(raddr "$res" $c)" \
        dns $c "${RIMPL[$res]}" uribl "$URI" $c stub '' "$scen"
      for r2 in unbound bind9 unbound-0x20 kresd pdns-recursor; do for a in $AUTHS; do
        M "$F" "$(rout $r2)" "${a%:*}" dns "${RIMPL[$r2]}" "${a#*:}" uribl "$URI" "${RIMPL[$r2]}" upstream '' "$scen"; done; done;;
    *)
      run_lines "$f" $((20 + i))
      stub_rule "$F" "$c" "$res" "$cat_" "$scen";;
  esac
  upstream_rules "$F" "$cat_" "$scen"
  uncap
  i=$((i + 1))
done
log "$DAY: hard-benign scenarios done"

source "$HERE/shift_tunnels.sh"

for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
sleep 1
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
log "$DAY: done"
