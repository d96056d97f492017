//! `meridian dev`'s local outbox page: the messages its [`Held`](crate::transport::held::Held)
//! transport kept instead of sending, newest first, recipients masked.

use crate::transport::held::HeldMessage;

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page listing `messages` (newest first, as given).
pub fn html(messages: &[HeldMessage]) -> String {
    let rows: String = messages
        .iter()
        .map(|m| {
            format!(
                "<tr class=\"message\" data-id=\"{id}\"><td class=\"country\">{country}</td><td class=\"kind\">{kind}</td>\
                 <td class=\"channel\">{channel}</td><td class=\"recipient\">{recipient}</td>\
                 <td class=\"subject\">{subject}</td><td class=\"body\">{body}</td>\
                 <td class=\"due\">{due}</td><td class=\"held\">{held}</td></tr>\n",
                id = m.id,
                country = escape(&m.country),
                kind = m.kind.as_str(),
                channel = m.channel.as_str(),
                recipient = escape(&m.recipient),
                subject = escape(&m.subject),
                body = escape(&m.body),
                due = m.due_at.format("%Y-%m-%d %H:%M:%S UTC"),
                held = m.held_at.format("%Y-%m-%d %H:%M:%S UTC"),
            )
        })
        .collect();
    let summary = match messages.len() {
        0 => "No message held yet.".to_string(),
        1 => "1 message held.".to_string(),
        n => format!("{n} messages held."),
    };
    format!(
        "<!doctype html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<title>Meridian dev outbox</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .4rem .6rem; text-align: left; vertical-align: top; }}
th {{ background: #f4f4f4; }}
</style>
</head>
<body>
<h1>Outbox</h1>
<p>Notifications <code>meridian dev</code> held instead of sending them (newest first; also as
<a href=\"/dev/outbox.json\">JSON</a>).</p>
<p id=\"summary\">{summary}</p>
<table id=\"messages\">
<thead><tr><th>Country</th><th>Kind</th><th>Channel</th><th>Recipient</th><th>Subject</th><th>Message</th><th>Due</th><th>Held</th></tr></thead>
<tbody>
{rows}</tbody>
</table>
</body>
</html>
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Channel, Kind};

    #[test]
    fn text_is_escaped() {
        let message = HeldMessage {
            id: uuid::Uuid::nil(),
            country: "DE".into(),
            kind: Kind::Reminder,
            channel: Channel::Email,
            recipient: "a***@example.org".into(),
            subject: "<script>alert(1)</script>".into(),
            body: "Tom & Jerry".into(),
            due_at: chrono::Utc::now(),
            held_at: chrono::Utc::now(),
        };
        let page = html(&[message]);
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && page.contains("Tom &amp; Jerry"));
        assert!(!page.contains("<script>"));
        assert!(html(&[]).contains("No message held yet."));
    }
}
