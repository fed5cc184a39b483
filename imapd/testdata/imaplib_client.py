#!/usr/bin/env python3
"""A non-Go IMAP client run by TestPythonImaplib: Python's imaplib over
implicit TLS (certificate verification off: the test server's certificate
is self-signed). Usage: imaplib_client.py HOST PORT USER PASSWORD.
Exits non-zero with a message on the first unexpected answer."""

import imaplib
import ssl
import sys


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", "%s: %s %r" % (what, typ, data))
    return data


host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

M = imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
check("AUTH=PLAIN" in M.capabilities, "capabilities: %r" % (M.capabilities,))
ok(M.login(user, password), "LOGIN")
data = ok(M.capability(), "CAPABILITY")
check(b"IDLE" in data[0] and b"MOVE" in data[0], "capabilities after login: %r" % (data,))

msg = (b"From: Python <py@example.test>\r\n"
       b"To: alice@example.test\r\n"
       b"Subject: From imaplib\r\n"
       b"\r\n"
       b"Sent by Python.\r\n")
data = ok(M.append("INBOX", r"(\Draft)", imaplib.Time2Internaldate(1700000000), msg), "APPEND")
check(b"APPENDUID" in data[0], "APPENDUID missing: %r" % (data,))

data = ok(M.select("INBOX"), "SELECT")
count = int(data[0])
check(count >= 1, "SELECT count %d" % count)

data = ok(M.fetch(str(count), "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"), "FETCH headers")
check(b"Subject: From imaplib" in data[0][1], "header fields: %r" % (data,))
check(b"\\Draft" in data[0][0], "flags: %r" % (data,))

data = ok(M.search(None, "UNSEEN"), "SEARCH UNSEEN")
check(str(count).encode() in data[0].split(), "SEARCH UNSEEN: %r" % (data,))

data = ok(M.fetch(str(count), "(RFC822)"), "FETCH RFC822")
check(data[0][1] == msg, "body differs: %r" % (data,))
data = ok(M.fetch(str(count), "(FLAGS)"), "FETCH FLAGS")
check(b"\\Seen" in data[0], "implicit \\Seen: %r" % (data,))

ok(M.store(str(count), "+FLAGS", r"(\Flagged)"), "STORE")
data = ok(M.search(None, "FLAGGED"), "SEARCH FLAGGED")
check(str(count).encode() in data[0].split(), "SEARCH FLAGGED: %r" % (data,))

data = ok(M.uid("SEARCH", None, "ALL"), "UID SEARCH")
uids = data[0].split()
check(len(uids) == count, "UID SEARCH ALL: %r" % (data,))
ok(M.uid("COPY", uids[-1].decode(), "Archive"), "UID COPY")

ok(M.store(str(count), "+FLAGS.SILENT", r"(\Deleted)"), "STORE \\Deleted")
data = ok(M.expunge(), "EXPUNGE")
check(data[0] == str(count).encode(), "EXPUNGE: %r" % (data,))

data = ok(M.status("Archive", "(MESSAGES UNSEEN)"), "STATUS")
check(b"MESSAGES 1" in data[0], "STATUS: %r" % (data,))

typ, data = M.list()
check(typ == "OK" and any(b"Archive" in l for l in data), "LIST: %r" % (data,))
ok(M.close(), "CLOSE")
typ, _ = M.logout()
check(typ == "BYE", "LOGOUT: %s" % typ)
print("imaplib: all OK")
