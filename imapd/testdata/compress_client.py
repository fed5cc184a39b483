#!/usr/bin/env python3
"""A raw IMAP client over TLS that turns on COMPRESS=DEFLATE (RFC 4978)
and compresses with zlib, run by TestCompressPython. Each command goes out
as one piece ended by the given zlib flush (sync, partial or full), and
nothing more is sent until the answer arrives: a server whose
decompressor waits for more input stalls here and the read times out.

Usage: compress_client.py HOST PORT USER PASSWORD FLUSH
Prints IDLING when in IDLE, then waits for the test to deliver a message
(which must arrive while idle). Exits non-zero on the first unexpected
answer."""

import random
import socket
import ssl
import sys
import zlib

FLUSH = {"sync": zlib.Z_SYNC_FLUSH, "partial": zlib.Z_PARTIAL_FLUSH, "full": zlib.Z_FULL_FLUSH}


def fail(what):
    sys.exit("FAIL: " + what)


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.comp = None
        self.decomp = None
        self.sent_raw = 0  # compressed bytes sent
        self.sent = 0  # bytes before compression

    def compress(self, flush):
        self.comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.decomp = zlib.decompressobj(-15)
        self.flush = flush
        if self.buf:
            fail("data after the COMPRESS OK before compression: %r" % self.buf)

    def send(self, data):
        self.sent += len(data)
        if self.comp is not None:
            data = self.comp.compress(data) + self.comp.flush(self.flush)
        self.sent_raw += len(data)
        self.sock.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                fail("timed out waiting for the server; have %r" % self.buf)
            if not data:
                fail("connection closed; have %r" % self.buf)
            if self.decomp is not None:
                data = self.decomp.decompress(data)
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def read(self, n):
        while len(self.buf) < n:
            data = self.sock.recv(65536)
            if not data:
                fail("connection closed in a literal")
            if self.decomp is not None:
                data = self.decomp.decompress(data)
            self.buf += data
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, tag, command, want="OK"):
        """Sends a command; returns its untagged lines; the tagged answer
        must start with want."""
        self.send(("%s %s\r\n" % (tag, command)).encode())
        return self.until(tag, want, command)

    def until(self, tag, want, what):
        untagged = []
        while True:
            l = self.line()
            if l.startswith(tag + " "):
                if not l[len(tag) + 1:].startswith(want):
                    fail("%s: %s, want %s" % (what, l, want))
                return untagged
            untagged.append(l)


host, port, user, password, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname=host)
c = Conn(sock)
greeting = c.line()
if "COMPRESS=DEFLATE" not in greeting:
    fail("greeting without COMPRESS=DEFLATE: " + greeting)
c.cmd("a", "LOGIN %s %s" % (user, password))
c.cmd("b", "COMPRESS DEFLATE")
c.compress(FLUSH[mode])

data = c.cmd("c", "SELECT INBOX")
exists = [int(l.split()[1]) for l in data if l.endswith(" EXISTS")]
if exists != [2]:
    fail("SELECT: %r" % data)

# A FETCH with literals: the subjects of both messages.
c.send(b"d FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
subjects = []
while True:
    l = c.line()
    if l.startswith("d "):
        if not l.startswith("d OK"):
            fail("FETCH: " + l)
        break
    if l.endswith("}"):
        n = int(l[l.rindex("{") + 1:-1])
        subjects.append(c.read(n).strip().decode())
if subjects != ["Subject: one", "Subject: two"]:
    fail("FETCH subjects: %r" % subjects)

# A command split over two flushes, and two commands in one.
c.send(b"e NO")
c.send(b"OP\r\n")
c.until("e", "OK", "NOOP in two pieces")
c.send(b"f1 NOOP\r\nf2 NOOP\r\n")
c.until("f1", "OK", "pipelined NOOP")
c.until("f2", "OK", "pipelined NOOP")

# A longer command of varied text: zlib sends it as a dynamic-Huffman
# block, whose end a partial flush leaves only partly sent.
rnd = random.Random(1)
words = "the quick brown fox jumps over lazy dog meeting report invoice project update".split()
text = " ".join(rnd.choice(words) for _ in range(120))
data = c.cmd("k", 'UID SEARCH TEXT "%s"' % text)
if data != ["* SEARCH"]:
    fail("SEARCH: %r" % data)

# IDLE: the delivery must arrive while idle; DONE must be answered at once.
c.send(b"g IDLE\r\n")
l = c.line()
if not l.startswith("+"):
    fail("IDLE: " + l)
print("IDLING", flush=True)
l = c.line()
if l != "* 3 EXISTS":
    fail("in IDLE: %r, want * 3 EXISTS" % l)
c.send(b"DONE\r\n")
c.until("g", "OK", "DONE")

data = c.cmd("h", "UID FETCH 3 (FLAGS)")
if len(data) != 1 or "UID 3" not in data[0]:
    fail("UID FETCH after IDLE: %r" % data)
c.cmd("i", "COMPRESS DEFLATE", want="NO [COMPRESSIONACTIVE]")
data = c.cmd("j", "LOGOUT")
if not data or not data[0].startswith("* BYE"):
    fail("LOGOUT: %r" % data)
print("compressed: sent %d bytes as %d" % (c.sent, c.sent_raw))
print("OK")
