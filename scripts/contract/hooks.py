"""What a schema cannot say, said to schemathesis: each hook adjusts a generated request where
the API's rule depends on something outside the request (the clock), and says why."""

import datetime

import schemathesis


@schemathesis.hook
def map_case(context, case):
    # POST /conversations/{id}/status: a snooze must end in the future, and JSON Schema has no
    # notion of "now". A snooze generated with a past end is moved to tomorrow.
    body = case.body
    if (
        case.method == "POST"
        and case.path.endswith("/status")
        and isinstance(body, dict)
        and body.get("status") == "snoozed"
        and isinstance(body.get("snoozed_until"), str)
    ):
        tomorrow = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        body["snoozed_until"] = tomorrow.isoformat()
    return case
