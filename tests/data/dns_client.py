"""dnspython as a DNS client for the corpus: queries over UDP and TCP, EDNS/DO, NOTIFY, UPDATE, AXFR.

Usage: dns_client.py SERVER SOURCE_ADDR. Errors from servers that do not support an operation are fine:
the exchange is still genuine DNS.
"""

import sys

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rdatatype
import dns.update
import dns.zone


def main(server: str, source: str) -> None:
    def ask(msg: dns.message.Message, tcp: bool = False) -> None:
        try:
            if tcp:
                dns.query.tcp(msg, server, timeout=2, source=source)
            else:
                dns.query.udp(msg, server, timeout=2, source=source)
        except Exception as e:  # a server may drop what it does not support
            print("error:", e, file=sys.stderr)

    for qtype in ("A", "AAAA", "MX", "TXT", "NS", "SOA", "SRV", "CAA"):
        ask(dns.message.make_query("corpus.test", qtype))
    ask(dns.message.make_query("www.corpus.test", "A", want_dnssec=True))
    ask(dns.message.make_query("www.corpus.test", "A", use_edns=False))
    ask(dns.message.make_query("www.corpus.test", "A", use_edns=0, payload=1232))
    ask(dns.message.make_query("nx.corpus.test", "A"))
    ask(dns.message.make_query("corpus.test", "SOA"), tcp=True)
    ask(dns.message.make_query("big.corpus.test", "TXT"), tcp=True)
    # NOTIFY (opcode 4)
    notify = dns.message.make_query("corpus.test", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notify.flags |= dns.flags.AA
    notify.flags &= ~dns.flags.RD
    ask(notify)
    # UPDATE (opcode 5)
    upd = dns.update.UpdateMessage("corpus.test")
    upd.add("py.corpus.test.", 300, "A", "192.0.2.99")
    ask(upd)
    upd = dns.update.UpdateMessage("corpus.test")
    upd.delete("py.corpus.test.", "A")
    ask(upd, tcp=True)
    try:
        dns.zone.from_xfr(dns.query.xfr(server, "corpus.test", timeout=2, source=source))
    except Exception as e:
        print("xfr error:", e, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
