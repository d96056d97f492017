#!/usr/bin/env bash
# Books an appointment in Germany through Meridian's API, as the kind walkthrough's last step:
# a clinic admin creates a practitioner and opens her mornings, and a patient books
# tomorrow's first slot.
#
#   e2e/kind/book.sh API_URL TOKEN_URL
#
# API_URL: where /de/v1 is served (the Gateway; or `meridian dev`, http://127.0.0.1:8080).
# TOKEN_URL: a development token issuer's token endpoint (`meridian dev-issuer`'s /token, or
# `meridian dev`'s /auth/token). Needs curl and python3.
set -euo pipefail
API="${1:?usage: book.sh API_URL TOKEN_URL}"
TOKENS="${2:?usage: book.sh API_URL TOKEN_URL}"

token() { curl -fsS "$TOKENS?sub=$1&roles=$2&countries=DE"; }
api() { # METHOD PATH TOKEN [BODY]: prints the body, fails on an HTTP error
    curl -sS --fail-with-body -X "$1" "$API$2" \
        -H "Authorization: Bearer $3" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: kind-$(date +%s%N)" ${4:+--data "$4"}
}
json() { # KEY...: the value at that path of the JSON document on stdin
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value)' "$@"
}

admin=$(token kind-clinic-admin ClinicAdmin)
patient=$(token kind-patient Patient)
practitioner=$(api POST /de/v1/practitioners "$admin" \
    '{"givenName": "Anna", "familyName": "Schmidt", "specialty": "Kardiologie", "city": "Berlin"}' | json id)
echo "practitioner $practitioner"
for weekday in 1 2 3 4 5 6 7; do
    api POST "/de/v1/practitioners/$practitioner/availability" "$admin" \
        "{\"kind\": \"weekly\", \"weekday\": $weekday, \"start\": \"09:00:00\", \"end\": \"12:00:00\", \"slotMinutes\": 30}" >/dev/null
done
tomorrow=$(python3 -c 'import datetime; print(datetime.date.today() + datetime.timedelta(days=1))')
start=$(api GET "/de/v1/practitioners/$practitioner/slots?from=$tomorrow&to=$tomorrow" "$patient" | json slots 0 start)
booked=$(api POST /de/v1/appointments "$patient" \
    "{\"practitionerId\": \"$practitioner\", \"start\": \"$start\", \"reason\": \"Kontrolle\"}")
echo "booked: $booked"
echo
echo "done: appointment $(echo "$booked" | json id) at $start, in Germany's Region (eu-central-1)"
