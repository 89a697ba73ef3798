#!/usr/bin/env bash
# Runs INSIDE the ppcorpus namespace (called by make_corpus.sh). Each scenario writes one capture of
# port-53 traffic and appends rules "file,initiator_ip,label,tool,server[,category,responder_ip,qname]"
# to manifest.csv (see label_corpus.py); the initiator address tells which client ran (each DNS client
# gets its own 127.0.0.x source).
set -uo pipefail
: "${PY:?}" "${OUT:?}" "${WORK:?}" "${HERE:?}"
cd "$WORK"
ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true  # nsd (secondary) lives here
DIG=127.0.0.11 KDIG=127.0.0.12 DRILL=127.0.0.13 DNSPY=127.0.0.14 NSUPD=127.0.0.15

source "$HERE/corpus_lib.sh"
echo "file,initiator_ip,label,tool,server,category,responder_ip,qname" > "$MAN"

# ---------------------------------------------------------------- the zone every DNS server serves
cat > "$WORK/corpus.test.zone" <<'ZONE'
$TTL 300
@       IN SOA ns1.corpus.test. hostmaster.corpus.test. 2024010101 3600 600 86400 300
        IN NS  ns1.corpus.test.
        IN MX  10 mail.corpus.test.
        IN TXT "v=spf1 -all"
        IN CAA 0 issue "letsencrypt.org"
ns1     IN A   127.0.0.1
www     IN A   192.0.2.10
www     IN AAAA 2001:db8::10
mail    IN A   192.0.2.25
alias   IN CNAME www.corpus.test.
_sip._udp IN SRV 10 60 5060 sip.corpus.test.
sip     IN A   192.0.2.50
ZONE
# big.corpus.test: a TXT RRset well over 512 bytes, to force truncation and TCP fallback
for i in $(seq 1 12); do
  echo "big     IN TXT \"chunk-$i-$(printf 'x%.0s' $(seq 1 60))\"" >> "$WORK/corpus.test.zone"
done

dns_clients() {  # dns_clients SERVER_ADDR (queries with every client; each from its own source)
  local S="$1" t
  for t in A AAAA MX TXT NS SOA SRV CAA CNAME ANY; do
    case $t in SRV) n=_sip._udp.corpus.test;; CNAME) n=alias.corpus.test;; A|AAAA) n=www.corpus.test;; *) n=corpus.test;; esac
    dig -b $DIG @"$S" "$n" "$t" +tries=1 +time=2 >/dev/null
  done
  dig -b $DIG @"$S" www.corpus.test A +dnssec +tries=1 +time=2 >/dev/null       # EDNS with DO
  dig -b $DIG @"$S" www.corpus.test A +noedns +tries=1 +time=2 >/dev/null       # no EDNS
  dig -b $DIG @"$S" nope.corpus.test A +tries=1 +time=2 >/dev/null              # NXDOMAIN
  dig -b $DIG @"$S" www.example.com A +tries=1 +time=2 >/dev/null               # REFUSED / not ours
  dig -b $DIG @"$S" 10.2.0.192.in-addr.arpa PTR +tries=1 +time=2 >/dev/null
  dig -b $DIG @"$S" www.corpus.test A +tcp +tries=1 +time=2 >/dev/null          # TCP
  dig -b $DIG @"$S" www.corpus.test A +tcp +keepopen +tries=1 +time=2 >/dev/null
  dig -b $DIG @"$S" big.corpus.test TXT +bufsize=512 +tries=1 +time=2 >/dev/null  # TC=1 then TCP
  dig -b $DIG @"$S" big.corpus.test TXT +noedns +tries=1 +time=2 >/dev/null       # TC=1 then TCP
  dig -b $DIG @"$S" corpus.test AXFR +tries=1 +time=2 >/dev/null
  for t in A AAAA MX TXT SOA; do kdig -b $KDIG @"$S" corpus.test "$t" +timeout=2 +retry=0 >/dev/null; done
  kdig -b $KDIG @"$S" www.corpus.test A +dnssec +nsid +timeout=2 +retry=0 >/dev/null
  kdig -b $KDIG @"$S" www.corpus.test AAAA +tcp +timeout=2 +retry=0 >/dev/null
  kdig -b $KDIG @"$S" missing.corpus.test A +timeout=2 +retry=0 >/dev/null
  kdig -b $KDIG @"$S" big.corpus.test TXT +bufsize=512 +timeout=2 +retry=0 >/dev/null
  kdig -b $KDIG @"$S" corpus.test AXFR +timeout=2 +retry=0 >/dev/null
  for t in A MX NS SOA TXT; do drill -I $DRILL "$t" corpus.test @"$S" >/dev/null; done
  drill -I $DRILL -D www.corpus.test @"$S" A >/dev/null          # DO bit
  drill -I $DRILL -t www.corpus.test @"$S" AAAA >/dev/null       # TCP
  drill -I $DRILL nothing.corpus.test @"$S" A >/dev/null         # NXDOMAIN
  timeout 60 "$PY" "$HERE/dns_client.py" "$S" "$DNSPY" >/dev/null || log "dnspython client failed on $S"
  for tool in "dig $DIG" "kdig $KDIG" "drill $DRILL" "dnspython $DNSPY"; do
    set -- $tool; rule "$2" dns "$1" "$SERVER"
  done
}

# ---------------------------------------------------------------- bind9 (+ nsd as its secondary)
mkdir -p "$WORK/bind" "$WORK/nsd"
cp "$WORK/corpus.test.zone" "$WORK/bind/"
cat > "$WORK/bind/named.conf" <<CONF
options {
  directory "$WORK/bind"; pid-file "$WORK/bind/named.pid";
  listen-on port 53 { 127.0.0.1; }; listen-on-v6 port 53 { ::1; };
  recursion no; dnssec-validation no; allow-transfer { any; };
  notify explicit; also-notify { 127.0.0.2 port 53; }; notify-delay 0; notify-source 127.0.0.1;
};
zone "corpus.test" { type primary; file "$WORK/bind/corpus.test.zone"; allow-update { any; }; };
CONF
cat > "$WORK/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.2
  port: 53
  username: ""
  chroot: ""
  zonesdir: "$WORK/nsd"
  database: ""
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  zonelistfile: "$WORK/nsd/zone.list"
  xfrdir: "$WORK/nsd"
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: corpus.test
  zonefile: "corpus.test.zone"
  allow-notify: 127.0.0.1 NOKEY
  request-xfr: AXFR 127.0.0.1@53 NOKEY
  outgoing-interface: 127.0.0.2
CONF
SERVER=bind9
cap_start dns-bind9
named -f -c "$WORK/bind/named.conf" > "$WORK/named.log" 2>&1 & NAMED=$!
wait_port tcp 53
dns_clients 127.0.0.1
dig -b ::1 @::1 www.corpus.test AAAA +tries=1 +time=2 >/dev/null   # IPv6 over UDP
dig -b ::1 @::1 corpus.test SOA +tcp +tries=1 +time=2 >/dev/null   # IPv6 over TCP
rule ::1 dns dig bind9
nsd -d -c "$WORK/nsd/nsd.conf" > "$WORK/nsd.log" 2>&1 & NSD=$!    # secondary: SOA query + AXFR
sleep 2
# UPDATE with nsupdate; bind then sends NOTIFY to nsd, which fetches the new zone.
nsupdate <<UPD
local $NSUPD
server 127.0.0.1 53
zone corpus.test
update add new1.corpus.test. 300 A 192.0.2.77
update add new1.corpus.test. 300 TXT "added by nsupdate"
send
update delete www.corpus.test. AAAA
send
UPD
nsupdate -v <<UPD
local $NSUPD
server 127.0.0.1 53
zone corpus.test
update add new2.corpus.test. 300 A 192.0.2.78
send
UPD
sleep 3
rule $NSUPD dns nsupdate bind9
rule 127.0.0.1 dns named-notify bind9
rule 127.0.0.2 dns nsd-xfr bind9
cap_stop
stop $NAMED
SERVER=nsd
cap_start dns-nsd
dns_clients 127.0.0.2
cap_stop
stop $NSD

# ---------------------------------------------------------------- unbound (auth-zone, no recursion out)
cat > "$WORK/unbound.conf" <<CONF
server:
  interface: 127.0.0.1
  port: 53
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "$WORK"
  pidfile: "$WORK/unbound.pid"
  use-syslog: no
  access-control: 127.0.0.0/8 allow
  access-control: 127.0.0.13/32 refuse
  do-not-query-localhost: yes
  module-config: "iterator"
auth-zone:
  name: "corpus.test"
  zonefile: "$WORK/corpus.test.zone"
  for-downstream: yes
  for-upstream: no
CONF
SERVER=unbound
cap_start dns-unbound
unbound -d -c "$WORK/unbound.conf" > "$WORK/unbound.log" 2>&1 & UNB=$!
wait_port udp 53
dns_clients 127.0.0.1
cap_stop
stop $UNB

# ---------------------------------------------------------------- knot
mkdir -p "$WORK/knot"
cp "$WORK/corpus.test.zone" "$WORK/knot/corpus.test.zone"
cat > "$WORK/knot/knot.conf" <<CONF
server:
  listen: 127.0.0.1@53
  rundir: "$WORK/knot"
  user: root
database:
  storage: "$WORK/knot"
acl:
  - id: all
    address: 127.0.0.0/8
    action: [transfer, update]
template:
  - id: default
    storage: "$WORK/knot"
    acl: all
zone:
  - domain: corpus.test
    file: corpus.test.zone
CONF
SERVER=knot
cap_start dns-knot
knotd -c "$WORK/knot/knot.conf" > "$WORK/knot.log" 2>&1 & KNOT=$!
wait_port udp 53
dns_clients 127.0.0.1
cap_stop
stop $KNOT

# ---------------------------------------------------------------- dnsmasq (no upstream at all)
SERVER=dnsmasq
cap_start dns-dnsmasq
dnsmasq -k --no-resolv --no-hosts --listen-address=127.0.0.1 --bind-interfaces --port=53 --user=root \
  --pid-file="$WORK/dnsmasq.pid" --auth-server=ns1.corpus.test --auth-zone=corpus.test \
  --host-record=www.corpus.test,192.0.2.10,2001:db8::10 --mx-host=corpus.test,mail.corpus.test,10 \
  --txt-record=corpus.test,"v=spf1 -all" --cname=alias.corpus.test,www.corpus.test \
  --srv-host=_sip._udp.corpus.test,sip.corpus.test,5060,10,60 \
  $(for i in $(seq 1 12); do printf -- "--txt-record=big.corpus.test,chunk-%s-%s " "$i" "$(printf 'x%.0s' $(seq 1 60))"; done) \
  > "$WORK/dnsmasq.log" 2>&1 & DM=$!
wait_port udp 53
dns_clients 127.0.0.1
cap_stop
stop $DM

log "DNS done"
bash "$HERE/corpus_nondns.sh"
