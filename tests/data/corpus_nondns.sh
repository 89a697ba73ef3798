#!/usr/bin/env bash
# Non-DNS protocols and DNS tunnels on port 53 (inside the ppcorpus namespace; see make_corpus.sh).
set -uo pipefail
: "${PY:?}" "${OUT:?}" "${WORK:?}" "${HERE:?}"
cd "$WORK"
source "$HERE/corpus_lib.sh"

# ---------------------------------------------------------------- ssh: openssh server and client on 53
mkdir -p "$WORK/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id"
cp "$WORK/ssh/id.pub" "$WORK/ssh/authorized_keys"
cat > "$WORK/ssh/sshd_config" <<CONF
Port 53
ListenAddress 127.0.0.1
HostKey $WORK/ssh/host_key
AuthorizedKeysFile $WORK/ssh/authorized_keys
StrictModes no
PermitRootLogin yes
PasswordAuthentication no
PidFile $WORK/ssh/sshd.pid
CONF
cap_start ssh
/usr/sbin/sshd -D -f "$WORK/ssh/sshd_config" -E "$WORK/ssh/sshd.log" & SSHD=$!
wait_port tcp 53
SSHOPT=(-p 53 -i "$WORK/ssh/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null)
for i in 1 2 3; do ssh "${SSHOPT[@]}" root@127.0.0.1 "echo corpus $i" >/dev/null 2>&1; done
ssh -p 53 -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o PubkeyAuthentication=no nobody@127.0.0.1 true >/dev/null 2>&1   # rejected login
rule '*' ssh openssh openssh-server
cap_stop
stop $SSHD

# ---------------------------------------------------------------- socks5: dante server, curl client
python3 -m http.server 8080 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 & WEB=$!
cat > "$WORK/danted.conf" <<CONF
logoutput: $WORK/danted.log
internal: 127.0.0.1 port = 53
external: lo
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: root
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 127.0.0.0/8 }
CONF
cap_start socks5
danted -f "$WORK/danted.conf" -N 1 & DANTE=$!
wait_port tcp 53
for i in 1 2 3; do curl -s --max-time 3 --socks5 127.0.0.1:53 http://127.0.0.1:8080/ >/dev/null; done
curl -s --max-time 3 --socks5-hostname 127.0.0.1:53 http://localhost:8080/ >/dev/null
rule '*' socks5 curl dante
cap_stop
stop $DANTE

# ---------------------------------------------------------------- http: python http.server on 53, curl
cap_start http
python3 -m http.server 53 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 & HTTP=$!
wait_port tcp 53
for p in / /corpus.test.zone /missing; do curl -s --max-time 3 "http://127.0.0.1:53$p" >/dev/null; done
curl -s --max-time 3 -X POST -d 'a=1' http://127.0.0.1:53/ >/dev/null
"$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:53/').read()"
rule '*' http curl+urllib python-http.server
cap_stop
stop $HTTP $WEB

# ---------------------------------------------------------------- tls: openssl s_server, s_client + curl
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.crt" -days 30 \
  -subj /CN=corpus.test >/dev/null 2>&1
cap_start tls
openssl s_server -accept 127.0.0.1:53 -cert "$WORK/tls.crt" -key "$WORK/tls.key" -www -quiet >/dev/null 2>&1 & TLS=$!
wait_port tcp 53
echo | timeout 5 openssl s_client -connect 127.0.0.1:53 -servername corpus.test >/dev/null 2>&1
echo | timeout 5 openssl s_client -connect 127.0.0.1:53 -tls1_2 >/dev/null 2>&1
curl -sk --max-time 3 https://127.0.0.1:53/ >/dev/null
rule '*' tls openssl-s_client+curl openssl-s_server
cap_stop
stop $TLS

# ---------------------------------------------------------------- redis
cap_start redis
redis-server --port 53 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null 2>&1 & REDIS=$!
wait_port tcp 53
redis-cli -p 53 ping >/dev/null; redis-cli -p 53 set corpus 1 >/dev/null; redis-cli -p 53 get corpus >/dev/null
redis-cli -p 53 info server >/dev/null
rule '*' redis redis-cli redis-server
cap_stop
stop $REDIS

# ---------------------------------------------------------------- postgresql
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
su postgres -s /bin/sh -c "$PGBIN/initdb -D $WORK/pg/data -A trust >/dev/null"
cap_start postgresql
su postgres -s /bin/sh -c "$PGBIN/postgres -D $WORK/pg/data -p 53 -k $WORK/pg -c listen_addresses=127.0.0.1" \
  > "$WORK/pg.log" 2>&1 & PG=$!
wait_port tcp 53
for q in "select 1" "select version()" "create table t(x int); insert into t values (1); select * from t"; do
  psql -h 127.0.0.1 -p 53 -U postgres -c "$q" postgres >/dev/null 2>&1
done
PGSSLMODE=disable psql -h 127.0.0.1 -p 53 -U postgres -c "select 2" postgres >/dev/null 2>&1
rule '*' postgresql psql postgresql
cap_stop
stop $PG

# ---------------------------------------------------------------- ntp: chrony serving on 53, ntplib + chronyd client
cat > "$WORK/chrony.conf" <<CONF
port 53
bindaddress 127.0.0.1
allow 127.0.0.0/8
local stratum 8
driftfile $WORK/chrony.drift
pidfile $WORK/chronyd.pid
cmdport 0
CONF
cap_start ntp
chronyd -x -d -u root -f "$WORK/chrony.conf" > "$WORK/chrony.log" 2>&1 & CHRONY=$!
wait_port udp 53
for i in 1 2 3; do
  "$PY" -c "import ntplib; ntplib.NTPClient().request('127.0.0.1', port=53, version=4, timeout=2)" 2>/dev/null
  sleep 0.3
done
"$PY" -c "import ntplib; ntplib.NTPClient().request('127.0.0.1', port=53, version=3, timeout=2)" 2>/dev/null
rule '*' ntp ntplib chrony
cap_stop
stop $CHRONY

# ---------------------------------------------------------------- snmp
cat > "$WORK/snmpd.conf" <<CONF
agentAddress udp:127.0.0.1:53
rocommunity public 127.0.0.1
sysLocation corpus
CONF
export MIBS= MIBDIRS=/nonexistent  # Debian ships no standard MIBs; use numeric OIDs
cap_start snmp
snmpd -f -Lo -C -c "$WORK/snmpd.conf" >"$WORK/snmpd.log" 2>&1 & SNMPD=$!
wait_port udp 53
snmpget -v2c -c public -t 1 -r 0 127.0.0.1:53 1.3.6.1.2.1.1.1.0 >/dev/null 2>&1
snmpget -v1 -c public -t 1 -r 0 127.0.0.1:53 1.3.6.1.2.1.1.3.0 >/dev/null 2>&1
snmpwalk -v2c -c public -t 1 -r 0 127.0.0.1:53 1.3.6.1.2.1.1 >/dev/null 2>&1
snmpget -v3 -l noAuthNoPriv -u nobody -t 1 -r 0 127.0.0.1:53 1.3.6.1.2.1.1.1.0 >/dev/null 2>&1
rule '*' snmp net-snmp-tools net-snmp-snmpd
cap_stop
stop $SNMPD

# ---------------------------------------------------------------- syslog: util-linux logger (one-way; socat sink)
cap_start syslog
socat -u UDP4-RECV:53,bind=127.0.0.1 OPEN:/dev/null & SINK=$!
wait_port udp 53
logger --udp --server 127.0.0.1 --port 53 --rfc5424 "corpus syslog rfc5424 message"
logger --udp --server 127.0.0.1 --port 53 --rfc3164 -t corpus "corpus syslog bsd message"
logger --udp --server 127.0.0.1 --port 53 -p auth.warning "corpus warning"
rule '*' syslog logger socat-sink
cap_stop
stop $SINK

# ---------------------------------------------------------------- tftp: tftpd-hpa on 53, tftp-hpa client
mkdir -p "$WORK/tftp" && echo "corpus tftp file" > "$WORK/tftp/hello.txt"
cap_start tftp
in.tftpd -L -s -u root -a 127.0.0.1:53 "$WORK/tftp" & TFTPD=$!
wait_port udp 53
(cd "$WORK" && tftp 127.0.0.1 53 -m octet -c get hello.txt /dev/null)
(cd "$WORK" && tftp 127.0.0.1 53 -m netascii -c get nothere.txt /dev/null)
rule '*' tftp tftp-hpa tftpd-hpa
cap_stop
stop $TFTPD

# ---------------------------------------------------------------- sip: sipp UAS on 53, sipp UAC
cap_start sip
sipp -sn uas -i 127.0.0.1 -p 53 -nostdin >/dev/null 2>&1 & UAS=$!
wait_port udp 53
for port in 5070 5072; do
  timeout 15 sipp -nostdin -sn uac -i 127.0.0.1 -p $port 127.0.0.1:53 -m 3 -r 3 -timeout 10 -timeout_error >/dev/null 2>&1
done
rule '*' sip sipp-uac sipp-uas
cap_stop
stop $UAS

# ---------------------------------------------------------------- radius: freeradius on 53, radclient
cap_start radius
freeradius -f -i 127.0.0.1 -p 53 -l "$WORK/radius.log" >/dev/null 2>&1 & RAD=$!
wait_port udp 53
echo "User-Name = alice, User-Password = wrong" | radclient -r 1 -t 2 127.0.0.1:53 auth testing123 >/dev/null 2>&1
echo "User-Name = bob, User-Password = secret, NAS-IP-Address = 127.0.0.1" | radclient -r 1 -t 2 127.0.0.1:53 auth testing123 >/dev/null 2>&1
echo "Message-Authenticator = 0x00" | radclient -r 1 -t 2 127.0.0.1:53 status testing123 >/dev/null 2>&1
rule '*' radius radclient freeradius
cap_stop
stop $RAD

# ---------------------------------------------------------------- openvpn on 53: TLS mode over UDP and TCP,
# and the (deprecated) static-key mode; --dev null, so no tunnel device and no routes.
openvpn --genkey secret "$WORK/ovpn.key" >/dev/null 2>&1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/ovpn-ca.key" \
  -out "$WORK/ovpn-ca.crt" -days 30 -subj /CN=corpus-ca >/dev/null 2>&1
for n in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/ovpn-$n.key" \
    -out "$WORK/ovpn-$n.csr" -subj "/CN=$n" >/dev/null 2>&1
  eku=$([ $n = server ] && echo serverAuth || echo clientAuth)
  printf "extendedKeyUsage=%s\nkeyUsage=digitalSignature,keyAgreement\n" "$eku" > "$WORK/ovpn-$n.ext"
  openssl x509 -req -in "$WORK/ovpn-$n.csr" -CA "$WORK/ovpn-ca.crt" -CAkey "$WORK/ovpn-ca.key" -CAcreateserial \
    -out "$WORK/ovpn-$n.crt" -days 30 -extfile "$WORK/ovpn-$n.ext" >/dev/null 2>&1
done
ovpn_tls() {  # ovpn_tls udp|tcp SESSIONS
  local sproto=$1 cproto=$1 OVS
  [ "$1" = tcp ] && { sproto=tcp-server; cproto=tcp-client; }
  openvpn --dev null --proto $sproto --local 127.0.0.1 --lport 53 --tls-server --ca "$WORK/ovpn-ca.crt" \
    --cert "$WORK/ovpn-server.crt" --key "$WORK/ovpn-server.key" --dh none --verb 1 \
    > "$WORK/ovpn-$1-server.log" 2>&1 & OVS=$!
  wait_port "$1" 53
  for _ in $(seq "$2"); do
    timeout 5 openvpn --dev null --proto $cproto --remote 127.0.0.1 53 --nobind --tls-client \
      --ca "$WORK/ovpn-ca.crt" --cert "$WORK/ovpn-client.crt" --key "$WORK/ovpn-client.key" \
      --remote-cert-tls server --verb 1 >> "$WORK/ovpn-$1-client.log" 2>&1
  done
  stop $OVS
}
cap_start openvpn-tls-udp
ovpn_tls udp 3
rule '*' openvpn openvpn-tls-udp openvpn
cap_stop
cap_start openvpn-tls-tcp
ovpn_tls tcp 2
rule '*' openvpn openvpn-tls-tcp openvpn
cap_stop
cap_start openvpn-static
openvpn --dev null --proto udp --local 127.0.0.1 --lport 53 --secret "$WORK/ovpn.key" \
  --cipher AES-256-CBC --auth SHA256 --ping 1 --verb 1 > "$WORK/ovpn-server.log" 2>&1 & OVS=$!
wait_port udp 53
timeout 6 openvpn --dev null --proto udp --remote 127.0.0.1 53 --nobind --secret "$WORK/ovpn.key" \
  --cipher AES-256-CBC --auth SHA256 --ping 1 --verb 1 > "$WORK/ovpn-client.log" 2>&1
rule '*' openvpn openvpn-static-key openvpn
cap_stop
stop $OVS

# ---------------------------------------------------------------- mqtt: mosquitto on 53, mosquitto_pub/sub
printf 'listener 53 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n' > "$WORK/mosquitto.conf"
cap_start mqtt
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 & MQ=$!
wait_port tcp 53
mosquitto_pub -h 127.0.0.1 -p 53 -t corpus/test -m hello
mosquitto_pub -h 127.0.0.1 -p 53 -t corpus/test -m again -q 1 -V mqttv5
timeout 3 mosquitto_sub -h 127.0.0.1 -p 53 -t 'corpus/#' -C 1 -W 2 >/dev/null 2>&1
rule '*' mqtt mosquitto_pub+sub mosquitto
cap_stop
stop $MQ

# ---------------------------------------------------------------- stun: coturn on 53, turnutils_stunclient
cap_start stun
turnserver -n --listening-ip=127.0.0.1 --listening-port=53 --stun-only --no-cli --no-tls --no-dtls \
  --log-file=stdout --simple-log > "$WORK/turnserver.log" 2>&1 & TURN=$!
wait_port udp 53
for _ in 1 2 3; do timeout 5 turnutils_stunclient -p 53 127.0.0.1 >/dev/null 2>&1; done
rule '*' stun turnutils_stunclient coturn
cap_stop
stop $TURN

# ---------------------------------------------------------------- tunnels
cap_start tunnel-iodine
iodined -f -c -P corpuspass -l 127.0.0.1 -p 53 10.53.0.1/27 t.corpus.test > "$WORK/iodined.log" 2>&1 & IODD=$!
wait_port udp 53
for session in 1 2 3; do  # each client session is one UDP flow (one source port)
  timeout 25 iodine -f -P corpuspass -r 127.0.0.1 t.corpus.test > "$WORK/iodine$session.log" 2>&1 & IOD=$!
  for _ in $(seq 40); do grep -q "Connection setup complete" "$WORK/iodine$session.log" && break; sleep 0.5; done
  sleep 2
  stop $IOD
  sleep 1
done
rule '*' dns-tunnel iodine iodined
cap_stop
stop $IODD

mkdir -p "$WORK/dns2tcp"
cat > "$WORK/dns2tcp/dns2tcpd.conf" <<CONF
listen = 127.0.0.1
port = 53
user = root
chroot = $WORK/dns2tcp
domain = d.corpus.test
resources = ssh:127.0.0.1:22,http:127.0.0.1:8081
CONF
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 & WEB2=$!
cap_start tunnel-dns2tcp
dns2tcpd -F -f "$WORK/dns2tcp/dns2tcpd.conf" > "$WORK/dns2tcpd.log" 2>&1 & D2S=$!
wait_port udp 53
for session in 1 2 3; do  # each client process is one UDP flow
  dns2tcpc -z d.corpus.test -r http -l 8082 127.0.0.1 > "$WORK/dns2tcpc$session.log" 2>&1 & D2C=$!
  wait_port tcp 8082
  curl -s --max-time 10 http://127.0.0.1:8082/ >/dev/null
  [ "$session" = 1 ] && curl -s --max-time 10 http://127.0.0.1:8082/corpus.test.zone >/dev/null
  stop $D2C
done
rule '*' dns-tunnel dns2tcp dns2tcpd
cap_stop
stop $D2S $WEB2
log "non-DNS done"
