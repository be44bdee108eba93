#!/usr/bin/env python3
"""Send one message through a running smtpgate and print its Message-ID.

    send_mail.py implicit|starttls PORT CAFILE SUBJECT

Connects to 127.0.0.1:PORT, with implicit TLS (465) or STARTTLS (587,
2525), verifies the gateway's certificate against CAFILE for 127.0.0.1, and sends one message whose Subject is SUBJECT. Retries
the connection until a deadline, since the container may still be starting;
a failure after the connection is up (a refused message) is not retried.
Exits 1 with the reason on failure.
"""

import email.utils
import smtplib
import ssl
import sys
import time

CONNECT_DEADLINE = 60.0


def connect(mode, port, ctx):
    if mode == "implicit":
        s = smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        s.ehlo("client.example.org")
        if not s.has_extn("starttls"):
            raise SystemExit("no STARTTLS offered on port %d" % port)
        s.starttls(context=ctx)
    s.ehlo("client.example.org")
    return s


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("implicit", "starttls"):
        raise SystemExit(__doc__)
    mode, port, cafile, subject = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    # The test certificate names 127.0.0.1 too, so the name check is real.
    ctx = ssl.create_default_context(cafile=cafile)

    deadline = time.monotonic() + CONNECT_DEADLINE
    while True:
        try:
            s = connect(mode, port, ctx)
            break
        except (OSError, smtplib.SMTPServerDisconnected) as e:
            if isinstance(e, ssl.SSLCertVerificationError) or time.monotonic() > deadline:
                raise SystemExit("%s port %d: %s" % (mode, port, e))
            time.sleep(0.2)
    msgid = email.utils.make_msgid(domain="client.example.org")
    body = ("From: <sender@example.org>\r\nTo: <rcpt@example.org>\r\n"
            "Subject: %s\r\nMessage-ID: %s\r\n\r\nThrough smtpgate, %s.\r\n"
            % (subject, msgid, mode))
    s.sendmail("sender@example.org", ["rcpt@example.org"], body)
    s.quit()
    print(msgid)


if __name__ == "__main__":
    main()
