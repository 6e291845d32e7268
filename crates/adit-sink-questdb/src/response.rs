//! What an ILP server's answer means for a batch (pure): QuestDB's bad-row
//! rejection, retried failures, and the versions `/settings` lists.

use adit_http::{truncate, Answer};
use adit_pipeline::SinkError;

/// The one rule, for both writers, that an ILP server's error body is
/// about the data: QuestDB's answer to a bad row has `code: invalid` and
/// the line it names. Its 500 answers (disk full, a column file it cannot
/// map) name a line too, with `code: internal error`: the database's
/// trouble, retried. The body is read whatever its `Content-Type` says
/// (questdb-rs's errors do not carry the header).
pub fn names_bad_row(json: &serde_json::Value) -> bool {
    json.get("code").and_then(serde_json::Value::as_str) == Some("invalid")
        && json.get("line").is_some_and(serde_json::Value::is_i64)
}

/// What a non-2xx answer to an ILP write means. Only QuestDB's 400 answer
/// to a bad row ([`names_bad_row`]) is permanent: the batch is quarantined;
/// everything else is retried (see the crate docs).
pub fn classify(answer: &Answer) -> SinkError {
    let text = String::from_utf8_lossy(&answer.body);
    let text = truncate(text.trim());
    match answer.status {
        404 => {
            return SinkError::Retryable(
                "Could not flush buffer: HTTP endpoint does not support ILP (404)".into(),
            )
        }
        401 | 403 => {
            return SinkError::Retryable(format!(
                "Could not flush buffer: HTTP endpoint authentication error: {text} [code: {}]",
                answer.status
            ))
        }
        _ => {}
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
        return SinkError::Retryable(format!(
            "Could not flush buffer: HTTP {}: {text}",
            answer.status
        ));
    };
    let field = |name: &str| json.get(name);
    let message = field("message")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(text);
    let mut details = Vec::new();
    if let Some(id) = field("errorId").and_then(serde_json::Value::as_str) {
        details.push(format!("id: {id}"));
    }
    let code = field("code").and_then(serde_json::Value::as_str);
    if let Some(code) = code {
        details.push(format!("code: {code}"));
    }
    let line = field("line").and_then(serde_json::Value::as_i64);
    if let Some(line) = line {
        details.push(format!("line: {line}"));
    }
    let msg = if details.is_empty() {
        format!("Could not flush buffer: {message}")
    } else {
        format!("Could not flush buffer: {message} [{}]", details.join(", "))
    };
    if answer.status == 400 && names_bad_row(&json) {
        SinkError::Permanent(msg)
    } else {
        SinkError::Retryable(msg)
    }
}

/// The ILP versions a `/settings` body lists (`[1]` when it lists none).
pub fn versions(body: &[u8]) -> Result<Vec<u64>, String> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "malformed /settings answer: not JSON".to_string())?;
    match json
        .get("config")
        .and_then(|c| c.get("line.proto.support.versions"))
    {
        Some(serde_json::Value::Array(values)) => {
            let versions: Vec<u64> = values
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect();
            if versions.is_empty() {
                return Err("the server lists no line protocol version it supports".into());
            }
            Ok(versions)
        }
        _ => Ok(vec![1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            close: false,
            len: 0,
        }
    }

    #[test]
    fn only_a_rejected_row_is_permanent() {
        let rejected = classify(&answer(
            400,
            r#"{"code":"invalid","message":"cast error for line protocol float","line":3,"errorId":"5c2d"}"#,
        ));
        match rejected {
            SinkError::Permanent(msg) => assert_eq!(
                msg,
                "Could not flush buffer: cast error for line protocol float [id: 5c2d, code: invalid, line: 3]"
            ),
            other @ SinkError::Retryable(_) => panic!("{other:?}"),
        }
        // The same rule as questdb-rs's path: the body decides, whatever
        // its Content-Type (or whether it has a message).
        for body in [
            r#"{"code":"invalid","message":"x","line":1}"#,
            r#"{"code":"invalid","line":7}"#,
        ] {
            let a = answer(400, body);
            assert!(matches!(classify(&a), SinkError::Permanent(_)), "{a:?}");
        }
        for a in [
            answer(500, r#"{"code":"invalid","message":"odd","line":1}"#),
            answer(
                500,
                r#"{"code":"internal error","message":"could not open","line":1}"#,
            ),
            answer(400, r#"{"code":"invalid","message":"no line"}"#),
            answer(400, r#"{"code":"invalid","message":"x","line":"1"}"#),
            answer(400, r#"{"code":"invalid","message":"x","line":1"#),
            answer(503, "<html>503</html>"),
            answer(404, ""),
            answer(401, "bad token"),
            answer(413, ""),
        ] {
            assert!(matches!(classify(&a), SinkError::Retryable(_)), "{a:?}");
        }
    }

    #[test]
    fn settings_list_the_versions() {
        assert_eq!(
            versions(br#"{"config":{"line.proto.support.versions":[1,2],"x":1}}"#).unwrap(),
            vec![1, 2]
        );
        assert_eq!(versions(br#"{"release.type":"OSS"}"#).unwrap(), vec![1]);
        assert!(versions(br#"{"config":{"line.proto.support.versions":[]}}"#).is_err());
        assert!(versions(b"<html>").is_err());
    }
}
