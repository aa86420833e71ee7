//! The one-level `multipart/mixed` documents cloud-init and nodeadm read as EC2 user data:
//! parts are split on their boundary and kept byte for byte (headers and body), and a document
//! is written back with Windlass' own boundary. Nested multiparts and transfer encodings are
//! the reader's business, so nothing here decodes a body.

/// Windlass' boundary; a user part that contains its delimiter line is refused.
pub const BOUNDARY: &str = "==WINDLASS-BOOTSTRAP==";

/// One part: its header lines as written, and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<String>,
    pub body: String,
}

impl Part {
    pub fn new(content_type: &str, body: impl Into<String>) -> Self {
        Self {
            headers: vec![format!("Content-Type: {content_type}")],
            body: body.into(),
        }
    }

    /// The media type of its Content-Type, lower case, without parameters; `text/plain` when
    /// it names none (RFC 2045's default).
    pub fn media_type(&self) -> String {
        header_value(&self.headers, "content-type")
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "text/plain".to_owned())
    }

    /// Whether its body is base64 (`Content-Transfer-Encoding: base64`).
    pub fn is_base64(&self) -> bool {
        header_value(&self.headers, "content-transfer-encoding")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("base64"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MimeError {
    #[error("userData is a MIME document but its Content-Type names no multipart boundary")]
    NoBoundary,
    #[error("userData's MIME document has no closing boundary --{0}--")]
    Unterminated(String),
    #[error("userData contains the line --{BOUNDARY}, Windlass' own MIME boundary")]
    BoundaryInUse,
}

/// Whether `data` is a MIME document rather than a script or a config file.
pub fn is_mime(data: &str) -> bool {
    let start = data.trim_start().to_ascii_lowercase();
    start.starts_with("mime-version:") || start.starts_with("content-type:")
}

/// The parts of a `multipart/*` document.
pub fn parse(data: &str) -> Result<Vec<Part>, MimeError> {
    let data = data.replace("\r\n", "\n");
    let (head, rest) = data.split_once("\n\n").unwrap_or((&data, ""));
    let headers = unfold(head);
    let boundary = header_value(&headers, "content-type")
        .and_then(boundary_of)
        .ok_or(MimeError::NoBoundary)?;
    let delimiter = format!("--{boundary}");
    let closing = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in rest.split('\n') {
        let trimmed = line.trim_end();
        if trimmed == closing {
            parts.extend(current.take().map(|lines| part_of(&lines)));
            closed = true;
            break;
        }
        if trimmed == delimiter {
            parts.extend(current.take().map(|lines| part_of(&lines)));
            current = Some(Vec::new());
            continue;
        }
        if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if !closed {
        return Err(MimeError::Unterminated(boundary));
    }
    Ok(parts)
}

/// A `multipart/mixed` document of `parts`, in order.
pub fn write(parts: &[Part]) -> Result<String, MimeError> {
    let delimiter = format!("--{BOUNDARY}");
    if parts
        .iter()
        .any(|p| p.body.lines().any(|l| l.trim_end().starts_with(&delimiter)))
    {
        return Err(MimeError::BoundaryInUse);
    }
    let mut out =
        format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for part in parts {
        out.push_str(&delimiter);
        out.push('\n');
        for header in &part.headers {
            out.push_str(header);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&part.body);
        // The line break before a delimiter belongs to the delimiter (RFC 2046), not the body.
        out.push('\n');
    }
    out.push_str(&format!("{delimiter}--\n"));
    Ok(out)
}

fn part_of(lines: &[&str]) -> Part {
    let text = lines.join("\n");
    // A part that starts with a blank line has no headers.
    let (head, body) = match text.strip_prefix('\n') {
        Some(body) => ("", body),
        None => text.split_once("\n\n").unwrap_or((text.as_str(), "")),
    };
    Part {
        headers: head.lines().map(str::to_owned).collect(),
        body: body.to_owned(),
    }
}

/// Header lines with their continuations joined.
fn unfold(head: &str) -> Vec<String> {
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        match headers.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => headers.push(line.to_owned()),
        }
    }
    headers
}

fn header_value<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (key, value) = h.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_round_trips_its_parts() {
        let parts = vec![
            Part::new("text/x-shellscript", "#!/bin/bash\necho hi\n"),
            Part {
                headers: vec![
                    "Content-Type: application/node.eks.aws".into(),
                    "X-Note: kept".into(),
                ],
                body: "kind: NodeConfig\n".into(),
            },
        ];
        let document = write(&parts).unwrap();
        assert!(is_mime(&document));
        assert_eq!(parse(&document).unwrap(), parts);
    }

    #[test]
    fn a_users_document_is_read_with_its_own_boundary_and_folded_headers() {
        let document = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"//\"\r\n\r\n--//\r\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\r\n\r\necho one\r\n--//\r\nContent-Type: text/cloud-config\r\n\r\nruncmd: []\r\n--//--\r\n";
        let parts = parse(document).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].media_type(), "text/x-shellscript");
        assert_eq!(parts[0].body, "echo one");
        assert_eq!(parts[1].media_type(), "text/cloud-config");
    }

    #[test]
    fn broken_documents_say_what_is_wrong() {
        assert_eq!(
            parse("MIME-Version: 1.0\nContent-Type: multipart/mixed\n\n--x\n\nbody\n--x--\n"),
            Err(MimeError::NoBoundary)
        );
        assert_eq!(
            parse("Content-Type: multipart/mixed; boundary=x\n\n--x\n\nbody\n"),
            Err(MimeError::Unterminated("x".into()))
        );
        let sneaky = Part::new("text/plain", format!("--{BOUNDARY}\n"));
        assert_eq!(write(&[sneaky]), Err(MimeError::BoundaryInUse));
    }

    #[test]
    fn scripts_and_yaml_are_not_mime() {
        assert!(!is_mime("#!/bin/bash\necho hi"));
        assert!(!is_mime(
            "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig"
        ));
        assert!(is_mime("  content-type: multipart/mixed; boundary=b\n"));
    }
}
