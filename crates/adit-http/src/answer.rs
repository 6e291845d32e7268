//! HTTP/1.1 answers, parsed from bytes (pure): status, framing
//! (`Content-Length`, chunked, or until the server closes), interim answers
//! skipped.
//!
//! Invariants: an answer is complete or `Ok(None)` (more bytes needed);
//! nothing in it can make the parser allocate beyond [`MAX_ANSWER`] and
//! [`MAX_HEAD`].

/// Largest answer body read; a larger one drops the connection.
pub const MAX_ANSWER: usize = 1 << 20;

/// Largest answer head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server will close the connection (or already did).
    pub close: bool,
    /// Bytes the answer took, head and body.
    pub len: usize,
}

struct Head {
    status: u16,
    len: usize,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

/// `Ok(None)` while more bytes are needed. Interim answers (`100
/// Continue`, `103 Early Hints`, from a proxy) are skipped.
pub fn parse(all: &[u8]) -> Result<Option<Answer>, String> {
    let mut skipped = 0;
    let head = loop {
        let Some(head) = head(&all[skipped..])? else {
            return Ok(None);
        };
        if head.status >= 200 {
            break head;
        }
        skipped += head.len;
    };
    let buf = &all[skipped..];
    let rest = &buf[head.len..];
    let (body, body_len) = if matches!(head.status, 204 | 304) {
        (Vec::new(), 0)
    } else if head.chunked {
        match dechunk(rest)? {
            Some(whole) => whole,
            None => return Ok(None),
        }
    } else if let Some(n) = head.content_length {
        if n > MAX_ANSWER {
            return Err(format!("answer body of {n} bytes"));
        }
        match rest.get(..n) {
            Some(body) => (body.to_vec(), n),
            None => return Ok(None),
        }
    } else {
        // Delimited by the server closing the connection.
        return Ok(None);
    };
    Ok(Some(Answer {
        status: head.status,
        body,
        close: head.close,
        len: skipped + head.len + body_len,
    }))
}

/// The answer when the server closed the connection after `buf`.
pub fn parse_at_eof(all: &[u8]) -> Result<Answer, String> {
    if let Some(mut answer) = parse(all)? {
        answer.close = true;
        return Ok(answer);
    }
    let mut buf = all;
    while let Some(h) = head(buf)?.filter(|h| h.status < 200) {
        buf = &buf[h.len..];
    }
    match head(buf)? {
        Some(h) if h.content_length.is_none() && !h.chunked => Ok(Answer {
            status: h.status,
            body: buf[h.len..].to_vec(),
            close: true,
            len: buf.len(),
        }),
        _ => Err("connection closed in the middle of the answer".into()),
    }
}

fn head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("answer head longer than 16 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "answer head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    let status: u16 = words
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..600).contains(s) && *s != 101)
        .ok_or_else(|| format!("not an HTTP answer: {:?}", truncate(status_line)))?;
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {:?}", truncate(status_line)));
    }
    let mut head = Head {
        status,
        len: end + 4,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.content_length = Some(
                value
                    .parse()
                    .map_err(|_| format!("bad Content-Length {:?}", truncate(value)))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                head.close = true;
            } else if value.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(Some(head))
}

/// A chunked body, decoded, and the bytes it took; `None` while incomplete.
fn dechunk(all: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut rest = all;
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", truncate(size_text)))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                if eol == 0 {
                    return Ok(Some((body, all.len() - rest.len() + 2)));
                }
                rest = &rest[eol + 2..];
            }
        }
        if size > MAX_ANSWER - body.len() {
            return Err("chunked answer too large".into());
        }
        let Some(data) = rest.get(..size + 2) else {
            return Ok(None);
        };
        if &data[size..] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        body.extend_from_slice(&data[..size]);
        rest = &rest[size + 2..];
    }
}

/// At most 200 characters of `s`, for messages.
pub fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Answer {
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(
                parse(&bytes[..cut]).ok().flatten(),
                None,
                "complete after {cut} bytes of {text:?}"
            );
        }
        parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn framing() {
        let a = whole("HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n");
        assert_eq!(
            (a.status, a.body.len(), a.close, a.len),
            (204, 0, false, 36)
        );
        let a = whole("HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!((a.status, a.body.as_slice()), (400, &b"hello"[..]));
        let a = whole("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nT: 1\r\n\r\n");
        assert_eq!((a.body.as_slice(), a.close), (&b"Wikipedia"[..], true));
        let text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
        let mut more = text.as_bytes().to_vec();
        more.extend_from_slice(b"HTTP/1.1 204");
        assert_eq!(
            parse(&more).unwrap().unwrap().len,
            text.len(),
            "bytes after the answer are not its own"
        );
        let text = "HTTP/1.1 400 Bad\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(
            parse(format!("{text}cd").as_bytes()).unwrap().unwrap().len,
            text.len()
        );
        let a = whole("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(a.close, "HTTP/1.0 closes");
        // Until the server closes.
        let bytes = b"HTTP/1.1 500 Oops\r\n\r\npartial";
        assert_eq!(parse(bytes).unwrap(), None);
        let a = parse_at_eof(bytes).unwrap();
        assert_eq!(
            (a.status, a.body.as_slice(), a.close),
            (500, &b"partial"[..], true)
        );
        assert!(parse_at_eof(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_err());
        for bad in [
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse(&vec![b'x'; 20_000]).is_err(), "endless head");
        // A proxy's interim answers come before the real one.
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let a = whole(text);
        assert_eq!((a.status, a.len), (204, text.len()));
        assert!(parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").is_err());
        // A chunk size near usize::MAX is refused, not added up.
        for size in ["ffffffffffffffff", "fffffffffffffffe", "100001"] {
            let text = format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n{size}\r\nab"
            );
            assert!(parse(text.as_bytes()).is_err(), "{size}");
        }
    }
}
