"""Sample archive, other protocols sent to port 53: SSH, HTTP, TLS (Python's ssl), OpenVPN, random bytes, and
NTP and QUIC for the background. Used by jobs/sample/archive.py."""

from __future__ import annotations

import contextlib
import ssl
import struct
from functools import lru_cache

import numpy as np

from portprint.jobs.sample.dns import _SUBS, _popular, _pub_v4
from portprint.jobs.sample.templates import _T, _hex, _pick

_SSH_BANNERS = (
    "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13",
    "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10",
    "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
    "SSH-2.0-OpenSSH_for_Windows_9.5",
    "SSH-2.0-OpenSSH_7.4",
    "SSH-2.0-OpenSSH_9.8",
    "SSH-2.0-PuTTY_Release_0.81",
    "SSH-2.0-libssh2_1.11.0",
    "SSH-2.0-libssh_0.10.6",
    "SSH-2.0-Go",
    "SSH-2.0-paramiko_3.4.0",
    "SSH-2.0-dropbear_2022.83",
    "SSH-2.0-AsyncSSH_2.14.2",
    "SSH-2.0-JSCH_0.2.17",
)


# Other protocols, shaped like the real thing
# --------------------------------------------------------------------------------------------


def _ssh_kexinit(rng: np.random.Generator, modern: bool) -> tuple[bytes, int]:
    """SSH_MSG_KEXINIT packet (RFC 4253 §7.1); returns (packet, offset of the 16-byte cookie)."""
    kex = ("sntrup761x25519-sha512@openssh.com," if modern else "") + (
        "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,"
        "ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
        "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,ext-info-c"
        + (",kex-strict-c-v00@openssh.com" if modern else ""))
    hostkey = "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256,ssh-ed25519,rsa-sha2-512,rsa-sha2-256"
    enc = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com"
    mac = "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"
    lists = [kex, hostkey, enc, enc, mac, mac, "none,zlib@openssh.com", "none,zlib@openssh.com", "", ""]
    payload = b"\x14" + bytes(16) + b"".join(struct.pack("!I", len(s)) + s.encode() for s in lists)
    payload += b"\x00" + bytes(4)
    pad = 8 - (5 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    pkt = struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + rng.bytes(pad)
    return pkt, 6


def _ssh_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for banner in _SSH_BANNERS:
        b = (banner + "\r\n").encode()
        modern = "OpenSSH_9" in banner
        for answered in (False, True):
            if not answered:  # clients wait for the server's banner before KEXINIT
                out.append(_T(b, len(b)))
                continue
            kx, ck = _ssh_kexinit(rng, modern)
            server = _pick(rng, (*_SSH_BANNERS[:4], "SSH-2.0-dropbear_2022.83"))
            sb = (server + "\r\n").encode()
            skx, sck = _ssh_kexinit(rng, True)
            out.append(_T(b + kx, len(b + kx), 2, sb + skx, len(sb + skx), 2,
                          orig_rand=[(len(b) + ck, len(b) + ck + 16)],
                          resp_rand=[(len(sb) + sck, len(sb) + sck + 16)]))
    return out


_UAS = (
    "curl/8.5.0", "Wget/1.21.4", "python-requests/2.32.3", "Go-http-client/1.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 zgrab/0.x", "Microsoft-CryptoAPI/10.0",
)
_HTTP_RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0 (Ubuntu)\r\nContent-Type: text/html\r\n"
    b"Content-Length: 612\r\n\r\n",
    b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 150\r\n"
    b"Connection: close\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n",
    b"HTTP/1.0 302 Found\r\nLocation: https://portal.example.net/login\r\nContent-Length: 0\r\n\r\n",
)
_PROXY_RESP = (
    b"HTTP/1.1 200 Connection established\r\n\r\n",
    b"HTTP/1.1 407 Proxy Authentication Required\r\nServer: squid/6.6\r\n"
    b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 3524\r\n\r\n',
    b"HTTP/1.1 403 Forbidden\r\nServer: squid/6.6\r\nContent-Type: text/html\r\n\r\n",
)


def _http_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    get, connect = [], []
    for _ in range(60):
        ua = _pick(rng, _UAS)
        host = _pick(rng, (f"{_pick(rng, _SUBS)}.{_popular(rng)}", _pub_v4(rng), f"{_pub_v4(rng)}:53"))
        method = _pick(rng, ("GET", "GET", "GET", "POST", "HEAD"))
        path = _pick(rng, ("/", "/", "/index.html", "/api/v1/status", f"/{_hex(rng, 12)}", "/favicon.ico",
                           "/.env", "/wp-login.php", "/update/check?v=3.2.1"))
        if ua.startswith("Mozilla/5.0 zgrab") or rng.random() < 0.1:
            req = f"{method} {path} HTTP/1.0\r\n\r\n" if rng.random() < 0.5 else (
                f"{method} / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
                "Accept-Encoding: gzip\r\n\r\n")
        elif ua.startswith("python"):
            req = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n"
                   "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
        else:
            req = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n"
        if method == "POST":
            body = '{"id":"' + _hex(rng, 16) + '","status":"ok"}'
            req = req[:-2] + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        b = req.encode()
        resp = _pick(rng, _HTTP_RESP) if rng.random() < 0.6 else None
        extra = int(rng.integers(150, 60000)) if resp else 0
        get.append(_T(b, len(b), 1, resp, len(resp) + extra if resp else 0, 1 if resp else 0))
    for _ in range(30):
        target = f"{_pick(rng, _SUBS)}.{_popular(rng)}:{_pick(rng, (443, 443, 22, 8443))}"
        ua = _pick(rng, _UAS)
        req = (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {ua}\r\n"
               "Proxy-Connection: Keep-Alive\r\n\r\n").encode()
        resp = _pick(rng, _PROXY_RESP) if rng.random() < 0.6 else None
        # only an established tunnel carries traffic after the proxy's answer
        tunnel = resp is not None and b" 200 " in resp
        up, down = (int(rng.integers(2000, 400000)), int(rng.integers(5000, 4000000))) if tunnel else (0, 0)
        connect.append(_T(req, len(req) + up, 1 + up // 1000, resp, len(resp) + down if resp else 0,
                          1 + down // 1400 if resp else 0))
    return get, connect


_SNIS = ("dns.google", "cloudflare-dns.com", "vpn.example.org", "www.microsoft.com", "update.example.net",
         "login.microsoftonline.com", "cdn.jsdelivr.net", "api.telegram.org", "a1.example.io",
         "one.one.one.one")


@lru_cache(maxsize=64)
def _client_hello(sni: str, variant: int) -> bytes:
    """A real ClientHello from this Python's OpenSSL (its random fields are re-randomised per row)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if variant == 1:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif variant == 2:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    elif variant == 3:
        ctx.set_alpn_protocols(["dot"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sock = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):  # no server: the hello is all there is
        sock.do_handshake()
    return outgoing.read()


def _server_hello(rng: np.random.Generator, sid_len: int) -> tuple[bytes, int]:
    """First bytes of a TLS 1.2/1.3 ServerHello flight; returns (bytes, total flight size)."""
    body = b"\x03\x03" + bytes(32) + bytes([sid_len]) + bytes(sid_len) + b"\x13\x01\x00"
    # extensions: supported_versions = TLS 1.3, key_share x25519
    body += struct.pack("!H", 46) + bytes.fromhex("002b00020304" "00330024001d0020") + bytes(32)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    rec = b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs + bytes.fromhex("140303000101")
    return rec, len(rec) + int(rng.integers(1200, 5200))  # + encrypted certificate flight


def _tls_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for sni in _SNIS:
        for variant in range(4):
            hello = _client_hello(sni, variant)
            if len(hello) < 44 or hello[0] != 0x16:
                continue
            sid = hello[43]
            rnd = [(11, 43), (44, 44 + sid)]
            for answered in (False, True):
                if not answered:
                    out.append(_T(hello, len(hello), 1, orig_rand=rnd))
                    continue
                srv_sid = sid if sid else 32
                sh, total = _server_hello(rng, srv_sid)
                echo = [(44, 44, sid)] if sid else []  # TLS 1.3 servers echo the legacy session id
                out.append(_T(hello, len(hello), 1, sh, total, 3, orig_rand=rnd,
                              resp_rand=[(11, 43), (44, 44 + srv_sid)] if not sid else [(11, 43)],
                              echo=echo))
    return out


def _shift(ranges: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    return [(a + k, b + k) for a, b in ranges]


def _openvpn_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    """P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0: 0x38) and the server's V2 reply (0x40)."""
    udp, tcp = [], []
    for auth in ("none", "sha1", "sha256", "crypt"):
        hmac = {"none": 0, "sha1": 20, "sha256": 32, "crypt": 0}[auth]
        c = b"\x38" + bytes(8)  # opcode/key byte, session id
        c_rand = [(1, 9)]
        c_ts = -1
        if auth in ("sha1", "sha256"):
            c_rand.append((9, 9 + hmac))
            c += bytes(hmac) + b"\x00\x00\x00\x01"  # HMAC, replay packet id
            c_ts = len(c)
            c += bytes(4)  # net time
        elif auth == "crypt":
            c += b"\x00\x00\x00\x01"
            c_ts = len(c)
            c += bytes(4) + bytes(32 + 5)  # tag + encrypted ack array/packet id
            c_rand.append((17, 17 + 37))
        if auth != "crypt":
            c += b"\x00" + b"\x00\x00\x00\x00"  # ack array length 0, message packet id 0
        s = b"\x40" + bytes(8)
        s_rand = [(1, 9)]
        s_ts = -1
        if hmac:
            s_rand.append((9, 9 + hmac))
            s += bytes(hmac) + b"\x00\x00\x00\x01"
            s_ts = len(s)
            s += bytes(4)
        elif auth == "crypt":
            s += b"\x00\x00\x00\x01"
            s_ts = len(s)
            s += bytes(4) + bytes(32 + 17)
            s_rand.append((17, 17 + 49))
        echo_at = -1
        if auth != "crypt":
            s += b"\x01" + b"\x00\x00\x00\x00"  # acks the client's packet 0 ...
            echo_at = len(s)
            s += bytes(8) + b"\x00\x00\x00\x00"  # ... of the client's session id
        for framed in (False, True):
            pre_o = struct.pack("!H", len(c)) if framed else b""
            pre_r = struct.pack("!H", len(s)) if framed else b""
            k = len(pre_o)
            for answered in (False, True):
                t = _T(pre_o + c, len(c) + k, 1, orig_rand=_shift(c_rand, k),
                       orig_ts=c_ts + k if c_ts >= 0 else -1)
                if answered:
                    t.resp, t.resp_total, t.resp_msgs = pre_r + s, len(s) + k, 1
                    t.resp_rand = _shift(s_rand, k)
                    t.resp_ts = s_ts + k if s_ts >= 0 else -1
                    if echo_at >= 0:
                        t.echo = [(echo_at + k, 1 + k, 8)]
                (tcp if framed else udp).append(t)
    return udp, tcp


def _random_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    udp, tcp = [], []
    for n in (16, 24, 32, 40, 48, 56, 64, 72, 96, 128, 160, 256, 512, 1024, 1200, 1350):
        for answered in (False, True):
            r = int(rng.integers(16, 1400)) if answered else 0
            t = _T(bytes(n), n, 1, bytes(r) if answered else None, r, 1 if answered else 0,
                   orig_rand=[(0, n)], resp_rand=[(0, r)] if answered else [])
            udp.append(t)
            tcp.append(_T(bytes(n), n, 1, bytes(r) if answered else None, r, 1 if answered else 0,
                          orig_rand=[(0, n)], resp_rand=[(0, r)] if answered else []))
    return udp, tcp


def _ntp_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for vn in (4, 3):
        c = bytes([(vn << 3) | 3, 0, 6, 0x20]) + bytes(36) + bytes(8)  # client mode, random transmit ts
        s = bytes([(vn << 3) | 4, 2, 6, 0xE9]) + bytes(8) + bytes([10, 0, 0, 1]) + bytes(32)
        out.append(_T(c, 48, 1, s, 48, 1, orig_rand=[(40, 48)], resp_rand=[(16, 24), (32, 48)],
                      echo=[(24, 40, 8)]))  # server echoes the client's transmit time as origin
    return out


def _quic_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for first in (0xC0, 0xC1, 0xC3, 0xC8, 0xCB):
        for size in (1200, 1250, 1252, 1357):
            h = bytes([first]) + b"\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00"
            h += struct.pack("!H", 0x4000 | (size - len(h) - 2))
            s = bytes([first & 0xF0]) + b"\x00\x00\x00\x01\x00\x08" + bytes(8) + b"\x00" + b"\x44\xe2"
            out.append(_T(h + bytes(size - len(h)), size, 1, s + bytes(1200 - len(s)), 4800, 4,
                          orig_rand=[(6, 14), (len(h), size)], resp_rand=[(7, 15), (len(s), 1200)]))
    return out


