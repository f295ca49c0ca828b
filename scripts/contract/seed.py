"""Seeds a fresh server for the contract test: a tenant, an admin API token, and one object
of each kind the API's paths name, so that schemathesis' requests reach real objects and not
only 404s. Prints `NAME=value` lines for the shell to export."""

import sys
import uuid

import requests

base = sys.argv[1]
run = uuid.uuid4().hex[:8]
s = requests.Session()


def call(method, path, expect, **kwargs):
    r = s.request(method, base + path, timeout=30, **kwargs)
    if r.status_code != expect:
        sys.exit(f"seed: {method} {path} answered {r.status_code}: {r.text}")
    return r.json() if r.content else None


password = f"contract-{run}-passphrase"
signed = call(
    "POST",
    "/api/v1/auth/signup",
    201,
    json={
        "tenant_name": "Contract test",
        "tenant_slug": f"contract-{run}",
        "email": f"owner-{run}@contract.example",
        "display_name": "Contract owner",
        "password": password,
    },
)
# The session cookie is `Secure`: over this plain-HTTP loopback, send it by hand.
s.headers["Cookie"] = f"custodian_session={s.cookies.get('custodian_session')}"
s.cookies.clear()
token = call(
    "POST",
    "/api/v1/tokens",
    201,
    json={"name": "schemathesis", "role": "admin"},
)
del s.headers["Cookie"]
s.headers["Authorization"] = f"Bearer {token['token']}"

account = call("POST", "/api/v1/accounts", 201, json={"name": "Acme"})
contact = call(
    "POST",
    "/api/v1/contacts",
    201,
    json={"name": "Ana Lima", "email": f"ana-{run}@contract.example", "account_id": account["id"]},
)
inbox = call(
    "POST",
    "/api/v1/inboxes",
    201,
    json={"name": "Web chat", "channel": "webchat", "webchat": {"allowed_origins": ["http://localhost"]}},
)
whatsapp = call(
    "POST",
    "/api/v1/inboxes",
    201,
    json={
        "name": "WhatsApp",
        "channel": "whatsapp",
        "whatsapp": {
            "phone_number_id": "1055501000",
            "business_account_id": "2055501000",
            "access_token": "contract-access-token",
            "app_secret": "contract-app-secret",
            "verify_token": "contract-verify-token",
        },
    },
)
# A visitor of the web chat, for the visitor's own routes.
visitor = requests.post(
    f"{base}/api/v1/webchat/{inbox['id']}/sessions",
    json={"name": "Visitor"},
    headers={"Origin": "http://localhost"},
    timeout=30,
)
if visitor.status_code not in (200, 201):
    sys.exit(f"seed: the web chat session answered {visitor.status_code}: {visitor.text}")

values = {
    "CT_TOKEN": token["token"],
    "CT_TENANT": f"contract-{run}",
    "CT_EMAIL": f"owner-{run}@contract.example",
    "CT_PASSWORD": password,
    "CT_MEMBER_ID": signed["member"]["id"],
    "CT_TOKEN_ID": token["id"],
    "CT_ACCOUNT_ID": account["id"],
    "CT_CONTACT_ID": contact["id"],
    "CT_INBOX_ID": inbox["id"],
    "CT_WHATSAPP_INBOX_ID": whatsapp["id"],
    "CT_VISITOR": visitor.json()["session_token"],
}
for name, value in values.items():
    print(f"{name}={value}")
