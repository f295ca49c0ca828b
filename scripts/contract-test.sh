#!/usr/bin/env bash
# The API contract test (#13): schemathesis, from PyPI in a virtual environment made here,
# runs against a live server started here on its own embedded database, and checks every
# documented operation against the document the server serves (/api/openapi.json): no 5xx,
# only documented status codes and content types, answers that match their schemas, and no
# schema-valid request refused. Prints one `test result:` line that scripts/test.sh adds to
# the suite's closing count.
set -euo pipefail
cd "$(dirname "$0")/.."
here=scripts/contract
tmp="$PWD/target/tmp/contract"
mkdir -p "$tmp"

# The virtual environment, made again only when the pinned requirements change.
venv="$PWD/target/tmp/contract-venv"
if ! cmp -s "$here/requirements.txt" "$venv/.requirements" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.requirements"
fi

export SQLX_OFFLINE=true
cargo build --quiet --bin custodian
# A copy: another checkout sharing the target directory may build over the binary meanwhile.
cp "${CARGO_TARGET_DIR:-target}/debug/custodian" "$tmp/custodian"

# A fresh embedded database. As root it runs as `postgres`, which must reach the directory.
data="$tmp/data"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$tmp" 2>/dev/null; then
  data="/var/lib/custodian-contract"
fi
rm -rf "$data"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
graph_port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$venv/bin/python" "$here/fake_graph.py" "$graph_port" &
graph=$!

# Rate limits raised: the run sends many requests from one address with one token.
env -u DATABASE_URL WHATSAPP_GRAPH_URL="http://127.0.0.1:$graph_port" API_TENANT_RPS=100000 API_CLIENT_RPS=100000 LOGIN_IP_BURST=100000 \
  LOGIN_ACCOUNT_BURST=100000 RUST_LOG=warn \
  "$tmp/custodian" serve --bind "127.0.0.1:$port" --data-dir "$data" >"$tmp/server.log" 2>&1 &
server=$!
stop() {
  kill "$graph" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap stop EXIT
for _ in $(seq 1 600); do
  curl -fs "$base/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { cat "$tmp/server.log"; echo "contract: the server did not start"; exit 1; }
  sleep 0.1
done

curl -fsS "$base/api/openapi.json" >"$tmp/openapi.json"
"$venv/bin/python" "$here/seed.py" "$base" >"$tmp/seed.env"
set -a
# shellcheck disable=SC1091
. "$tmp/seed.env"
set +a

status=0
PYTHONPATH="$here" SCHEMATHESIS_HOOKS=hooks "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$base/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,positive_data_acceptance \
  --workers 2 --report junit --report-junit-path "$tmp/junit.xml" "$@" || status=$?

# The run may have made two-factor sign-in mandatory (PUT /api/v1/auth/mfa/policy), which
# confines the owner's session the round trip below signs in with to enrolment: undo that.
curl -fsS -X PUT -H "Authorization: Bearer $CT_TOKEN" -H 'Content-Type: application/json' \
  -d '{"required": "none"}' "$base/api/v1/auth/mfa/policy" >/dev/null

# A client generated from the same document, used for one real round trip (#13 item 4).
client=0
rm -rf "$tmp/client"
# Every schema must become a type and every operation a function: the generator only warns
# when it leaves one out, so its warnings are read here.
if "$venv/bin/openapi-python-client" generate --path "$tmp/openapi.json" --output-path "$tmp/client" \
  --overwrite >"$tmp/client-generation.log" 2>&1 &&
  ! grep -E "Unable to|will not be generated" "$tmp/client-generation.log" &&
  "$venv/bin/python" "$here/client_roundtrip.py" "$base" "$tmp/client"; then
  client=1
else
  cat "$tmp/client-generation.log"
  status=1
fi

# One line in cargo's words, for scripts/test.sh's closing count: an operation passes when
# schemathesis found nothing wrong with it; the client's round trip is one more test.
"$venv/bin/python" - "$tmp/junit.xml" "$client" <<'PY'
import sys
import xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
passed = failed = 0
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        failed += 1
    elif case.find("skipped") is None:
        passed += 1
if sys.argv[2] == "1":
    passed += 1
else:
    failed += 1
print(f"test result: {'ok' if failed == 0 else 'FAILED'}. {passed} passed; {failed} failed; contract (schemathesis, generated client)")
PY
exit "$status"
