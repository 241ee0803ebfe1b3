"""Drives one SMTP session with Python's standard smtplib, as a real client would.

Usage: smtplib_session.py PORT PLAN_JSON
PLAN_JSON: {"verb": "BULK"|"MAIL", "sender": "...", "rcpts": ["..."], "message": "..."|null,
            "starttls": true|false (default false)}
Prints one JSON object: the EHLO reply, whether BULK is advertised, and every reply. With
"starttls", the session goes on under TLS after the first EHLO (smtplib's starttls(), which
sends EHLO again), accepting any certificate: the server's is a throwaway self-signed one.
"""

import json
import smtplib
import ssl
import sys


def reply(pair):
    code, text = pair
    return {"code": code, "text": text.decode("ascii", "replace")}


def main():
    port = int(sys.argv[1])
    plan = json.loads(sys.argv[2])
    out = {}
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=10) as smtp:
        out["ehlo"] = reply(smtp.ehlo())
        out["bulk_advertised"] = smtp.has_extn("bulk")
        out["size_advertised"] = smtp.has_extn("size")
        out["starttls_advertised"] = smtp.has_extn("starttls")
        if plan.get("starttls"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            out["starttls"] = reply(smtp.starttls(context=context))
            out["tls_version"] = smtp.sock.version()
            out["ehlo_tls"] = reply(smtp.ehlo())
            out["starttls_advertised_under_tls"] = smtp.has_extn("starttls")
            out["bulk_advertised"] = smtp.has_extn("bulk")
        out["from"] = reply(smtp.docmd(plan["verb"], "FROM:<%s>" % plan["sender"]))
        out["rcpts"] = [reply(smtp.rcpt(rcpt)) for rcpt in plan["rcpts"]]
        if plan.get("message") is not None:
            try:
                out["data"] = reply(smtp.data(plan["message"]))
            except smtplib.SMTPDataError as error:
                out["data"] = {"code": error.smtp_code, "text": error.smtp_error.decode()}
        out["quit"] = reply(smtp.quit())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
