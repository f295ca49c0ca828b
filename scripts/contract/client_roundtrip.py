"""One real round trip through a client generated from the served document with
openapi-python-client (issue #13): sign in, create a contact, find it in the list. Exits
non-zero, saying why, when any step fails or the generated types do not fit the answers.

Usage: client_roundtrip.py BASE_URL CLIENT_DIR (the generator's output; its package is
imported from there). Credentials come from the seed (CT_TENANT, CT_EMAIL, CT_PASSWORD)."""

import os
import sys
import uuid

base, client_dir = sys.argv[1], sys.argv[2]
sys.path.insert(0, client_dir)

from custodian_client import Client  # noqa: E402
from custodian_client.api.auth import post_auth_login  # noqa: E402
from custodian_client.api.crm import get_contacts, post_contacts  # noqa: E402
from custodian_client.models import Contact, LoginBody, PostContactsBody, Session  # noqa: E402


def check(what, response, status, kind):
    if response.status_code != status or not isinstance(response.parsed, kind):
        sys.exit(f"client round trip: {what} answered {response.status_code}: {response.content!r}")
    return response.parsed


client = Client(base_url=base, raise_on_unexpected_status=True)
login = post_auth_login.sync_detailed(
    client=client,
    body=LoginBody(tenant=os.environ["CT_TENANT"], email=os.environ["CT_EMAIL"], password=os.environ["CT_PASSWORD"]),
)
session = check("signing in", login, 200, Session)
# The session cookie is `Secure`; over this plain-HTTP loopback the client is handed it.
cookie = login.headers["set-cookie"].split(";", 1)[0].split("=", 1)[1]
client = Client(base_url=base, cookies={"custodian_session": cookie}, raise_on_unexpected_status=True)

email = f"round-trip-{uuid.uuid4().hex[:8]}@client.example"
created = check(
    "creating a contact",
    post_contacts.sync_detailed(client=client, body=PostContactsBody(name="Round Trip", email=email)),
    201,
    Contact,
)
page = get_contacts.sync_detailed(client=client, q=email)
if page.status_code != 200 or page.parsed is None:
    sys.exit(f"client round trip: listing contacts answered {page.status_code}: {page.content!r}")
found = [c for c in page.parsed.items if c.id == created.id]
if len(found) != 1 or found[0].email != email or found[0].name != "Round Trip":
    sys.exit(f"client round trip: the new contact is not in the list: {page.content!r}")
print(f"client round trip: signed in as {session.member.email}, created and listed contact {created.id}")
