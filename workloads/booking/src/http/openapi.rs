//! `GET /{cc}/v1/openapi.json`: the API this service serves for country `cc`, as OpenAPI 3.1.
//! Public, like any API description; every operation in it needs a bearer token.

use std::sync::Arc;

use axum::extract::Path;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::Service;

pub fn router() -> Router<Arc<Service>> {
    Router::new().route(
        "/{cc}/v1/openapi.json",
        get(|Path(cc): Path<String>| async move { Json(document(&cc)) }),
    )
}

/// `(method, path, summary, request schema, response schema)` of every operation.
pub const OPERATIONS: &[(&str, &str, &str, Option<&str>, &str)] = &[
    (
        "get",
        "/practitioners",
        "List practitioners (paged: ?after=<id>&limit=)",
        None,
        "PractitionerPage",
    ),
    (
        "post",
        "/practitioners",
        "Create a practitioner (ClinicAdmin)",
        Some("Profile"),
        "Practitioner",
    ),
    (
        "post",
        "/practitioners/import",
        "Import practitioners, idempotent by externalId (ClinicAdmin)",
        Some("ProfileList"),
        "ImportReport",
    ),
    (
        "get",
        "/practitioners/search",
        "Search the country's practitioners (?q=&specialty=&city=&language=&availableFrom=&availableTo=&offset=&limit=)",
        None,
        "SearchResults",
    ),
    (
        "get",
        "/practitioners/{id}",
        "Read a practitioner",
        None,
        "Practitioner",
    ),
    (
        "put",
        "/practitioners/{id}",
        "Replace a practitioner's profile (If-Match: version)",
        Some("Profile"),
        "Practitioner",
    ),
    (
        "post",
        "/practitioners/{id}/deactivate",
        "Stop a practitioner taking appointments",
        None,
        "Practitioner",
    ),
    (
        "get",
        "/practitioners/{id}/availability",
        "A practitioner's availability entries",
        None,
        "AvailabilityList",
    ),
    (
        "post",
        "/practitioners/{id}/availability",
        "Add a weekly rule, an extra window or time off",
        Some("AvailabilityEntry"),
        "AvailabilityEntry",
    ),
    (
        "get",
        "/practitioners/{id}/slots",
        "Free slots between two local dates (?from=&to=)",
        None,
        "Slots",
    ),
    (
        "get",
        "/practitioners/{id}/slots/events",
        "Live slot changes (text/event-stream, Last-Event-ID)",
        None,
        "SlotChange",
    ),
    (
        "get",
        "/appointments",
        "My appointments (patient, practitioner) or the country's (staff)",
        None,
        "AppointmentPage",
    ),
    (
        "post",
        "/appointments",
        "Book a slot (Idempotency-Key required)",
        Some("NewAppointment"),
        "Appointment",
    ),
    ("get", "/appointments/{id}", "Read an appointment", None, "Appointment"),
    (
        "post",
        "/appointments/{id}/cancel",
        "Cancel an appointment",
        None,
        "Appointment",
    ),
    (
        "post",
        "/appointments/{id}/reschedule",
        "Move an appointment to another free slot",
        Some("NewTime"),
        "Appointment",
    ),
    (
        "get",
        "/invoices",
        "Invoices and credit notes, newest first (PracticeManager: the country's; Patient: their own; ?before=<number>&limit=)",
        None,
        "InvoicePage",
    ),
    (
        "get",
        "/analytics/appointments",
        "Bookings, cancellations and re-assignments per minute and specialty (PracticeManager; ?from=&to=, RFC 3339, at most 7 days, default the last hour)",
        None,
        "AppointmentAnalytics",
    ),
];

fn document(cc: &str) -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, summary, request, response) in OPERATIONS {
        let mut operation = json!({
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                "2XX": {"description": "Success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "default": {"description": "A problem", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            }
        });
        if let Some(request) = request {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{request}")}}}});
        }
        if path.contains("{id}") {
            operation["parameters"] =
                json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = operation;
    }
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    // Apart: one json! of the whole document would pass the macro's recursion limit.
    let count = json!({"type": "integer"});
    let analytics = json!({"type": "object", "properties": {
        "country": string, "from": time, "to": time,
        "finalBefore": {"type": ["string", "null"], "format": "date-time",
                        "description": "minutes before this are final: later events are not counted"},
        "minutes": {"type": "array", "items": {"type": "object", "properties": {
            "minute": time, "specialty": string, "booked": count, "cancelled": count, "reassigned": count}}}}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": format!("Meridian booking API ({})", cc.to_ascii_uppercase()), "version": "v1"},
        "servers": [{"url": format!("/{cc}/v1")}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Problem": {"type": "object", "properties": {
                    "type": string, "title": string, "status": {"type": "integer"}, "detail": string,
                    "errors": {"type": "array", "items": {"type": "object", "properties": {"field": string, "message": string}}}}},
                "Profile": {"type": "object", "required": ["givenName", "familyName", "specialty", "city"], "properties": {
                    "externalId": string, "givenName": string, "familyName": string, "specialty": string, "city": string,
                    "languages": {"type": "array", "items": string}}},
                "ProfileList": {"type": "array", "items": {"$ref": "#/components/schemas/Profile"}},
                "Practitioner": {"allOf": [{"$ref": "#/components/schemas/Profile"}, {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "countryCode": string, "active": {"type": "boolean"},
                    "version": {"type": "integer"}, "updatedAt": time}}]},
                "PractitionerPage": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Practitioner"}}, "next": string}},
                "SearchResults": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string", "format": "uuid"}, "givenName": string, "familyName": string,
                        "specialty": string, "city": string, "languages": {"type": "array", "items": string},
                        "score": {"type": "number"}}}},
                    "total": {"type": "integer", "description": "absent when filtering by availability"},
                    "offset": {"type": "integer"}, "limit": {"type": "integer"}}},
                "ImportReport": {"type": "object", "properties": {
                    "created": {"type": "integer"}, "updated": {"type": "integer"}, "unchanged": {"type": "integer"},
                    "errors": {"type": "array", "items": {"type": "object", "properties": {"row": {"type": "integer"}, "field": string, "message": string}}}}},
                "AvailabilityEntry": {"type": "object", "required": ["kind"], "properties": {
                    "kind": {"enum": ["weekly", "extra", "timeOff"]}, "weekday": {"type": "integer", "minimum": 1, "maximum": 7},
                    "date": {"type": "string", "format": "date"}, "start": string, "end": string, "slotMinutes": {"type": "integer"},
                    "validFrom": {"type": "string", "format": "date"}, "validUntil": {"type": "string", "format": "date"},
                    "startsAt": time, "endsAt": time}},
                "AvailabilityList": {"type": "array", "items": {"$ref": "#/components/schemas/AvailabilityEntry"}},
                "Slots": {"type": "object", "properties": {"timezone": string, "slots": {"type": "array", "items": {"type": "object", "properties": {
                    "start": time, "end": time, "localStart": string, "localEnd": string}}}}},
                "SlotsByPractitioner": {"type": "object", "properties": {"timezone": string, "practitioners": {"type": "array", "items": {
                    "type": "object", "properties": {"practitionerId": string, "givenName": string, "familyName": string,
                    "slots": {"$ref": "#/components/schemas/Slots/properties/slots"}}}}}},
                "SlotChange": {"type": "object", "properties": {"practitionerId": string, "start": time, "end": time}},
                "NewAppointment": {"type": "object", "required": ["practitionerId", "start"], "properties": {
                    "practitionerId": {"type": "string", "format": "uuid"}, "start": time, "reason": string,
                    "patientId": {"type": "string", "format": "uuid", "description": "staff only: the patient's client ID (their Patient id in the records service)"}}},
                "NewTime": {"type": "object", "required": ["start"], "properties": {"start": time}},
                "Appointment": {"type": "object", "properties": {
                    "id": {"type": "string", "format": "uuid"}, "countryCode": string, "practitionerId": {"type": "string", "format": "uuid"},
                    "patientId": {"type": "string", "description": "the patient's client ID, never their sign-in subject"},
                    "startsAt": time, "endsAt": time,
                    "status": {"enum": ["booked", "cancelled", "needs_rebooking", "completed"]}, "reason": string}},
                "AppointmentPage": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Appointment"}}}},
                "Invoice": {"type": "object", "properties": {
                    "number": {"type": "integer", "description": "consecutive per country"}, "kind": {"enum": ["invoice", "credit_note"]},
                    "appointmentId": {"type": "string", "format": "uuid"}, "patientId": string,
                    "practitionerId": {"type": "string", "format": "uuid"}, "currency": string,
                    "net": {"type": "string", "description": "a decimal of the currency, e.g. 60.00"}, "taxRate": string,
                    "tax": string, "total": string, "credits": {"type": "integer", "description": "a credit note's invoice"},
                    "issuedAt": time}},
                "InvoicePage": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Invoice"}},
                    "next": {"type": ["integer", "null"], "description": "pass as ?before= for the next page"}}},
                "AppointmentAnalytics": analytics
            }
        }
    })
}
