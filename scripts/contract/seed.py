"""Seeds a fresh server for the contract test: a tenant, an admin API token, and one object
of each kind the API's paths name, so that schemathesis' requests reach real objects and not
only 404s. Prints `NAME=value` lines for the shell to export."""

import sys
import time
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
# The tenant's closure and its exports are the owner's alone (tenant.own), which no token may
# hold: their operations run with the owner's session (schemathesis.toml).
owner_session = s.headers["Cookie"].split("=", 1)[1]
tenant_export = call("POST", "/api/v1/tenant/exports", 202)
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
visitor_token = visitor.json()["session_token"]
said = requests.post(
    f"{base}/api/v1/webchat/{inbox['id']}/messages",
    json={"body": "How long do I have to return an item?"},
    headers={"Origin": "http://localhost", "X-Webchat-Session": visitor_token},
    timeout=30,
)
if said.status_code not in (200, 201, 202):
    sys.exit(f"seed: the visitor's message answered {said.status_code}: {said.text}")
conversation = call("GET", "/api/v1/conversations", 200)["items"][0]
article = call(
    "POST",
    "/api/v1/knowledge/articles",
    201,
    json={"title": "Returns", "body": "You can return any item within 30 days."},
)
held = call("POST", "/api/v1/contacts", 201, json={"name": "Held Person"})
hold = call(
    "POST",
    "/api/v1/legal-holds",
    201,
    json={"entity_type": "contact", "entity_id": held["id"], "reason": "Litigation"},
)
invitation = call(
    "POST", "/api/v1/invitations", 201, json={"email": f"new-{run}@contract.example", "role": "agent"}
)
# An export of the tenant's own events: an erasure among the generated requests expires the
# exports that copy the erased person's entries (DSR-3), and the run needs this one to stay.
export = call("POST", "/api/v1/audit/exports", 202, json={"format": "json", "action_prefix": "tenant."})
# The visitor's message started an agent run (the offline responder): wait for its record.
execution = None
for _ in range(100):
    runs = call("GET", f"/api/v1/conversations/{conversation['id']}/executions", 200)
    items = runs["items"] if isinstance(runs, dict) else runs
    if items:
        execution = items[0]
        break
    time.sleep(0.1)
if execution is None:
    sys.exit("seed: the agent did not run on the visitor's message")
review = call(
    "POST",
    "/api/v1/reviews",
    201,
    json={"kind": "human_review", "conversation_id": conversation["id"], "note": "Check the answer"},
)
privacy_request = call(
    "POST",
    "/api/v1/privacy/requests",
    201,
    json={
        "type": "access",
        "contact_id": contact["id"],
        "requester": "data_subject",
        "identity_check": "document",
    },
)
consent = call(
    "POST",
    f"/api/v1/contacts/{contact['id']}/consents",
    201,
    json={"purpose": "marketing", "legal_basis": "consent", "source": "form"},
)
jobs = call("GET", "/api/v1/jobs", 200)
job_items = jobs["items"] if isinstance(jobs, dict) else jobs

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
    "CT_VISITOR": visitor_token,
    "CT_CONVERSATION_ID": conversation["id"],
    "CT_ARTICLE_ID": article["id"],
    "CT_HOLD_ID": hold["id"],
    "CT_INVITATION_ID": invitation["id"],
    "CT_EXPORT_ID": export["id"],
    "CT_EXECUTION_ID": execution["id"],
    "CT_REVIEW_ID": review["id"],
    "CT_REQUEST_ID": privacy_request["id"],
    "CT_CONSENT_ID": consent["id"],
    "CT_OWNER_SESSION": owner_session,
    "CT_TENANT_EXPORT_ID": tenant_export["id"],
    "CT_JOB_ID": job_items[0]["id"] if job_items else str(uuid.uuid4()),
}
for name, value in values.items():
    print(f"{name}={value}")
