//! The body of a definitions import: JSON as it is, or the file of a
//! `multipart/form-data` upload (the form RabbitMQ's management UI posts, with the
//! file in the part named `file`).

use axum::http::{HeaderMap, header};

use super::refused;
use crate::management::ApiError;

/// The definitions JSON in a request body.
pub(super) fn json_part<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<&'a [u8], ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Ok(body);
    }
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| refused("a multipart upload needs a boundary"))?;
    file_part(body, boundary.as_bytes())
        .ok_or_else(|| refused("the multipart upload has no part named 'file'"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The content of the part named `file`.
fn file_part<'a>(body: &'a [u8], boundary: &[u8]) -> Option<&'a [u8]> {
    let delimiter = [b"--".as_slice(), boundary].concat();
    let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
    loop {
        // `--` after a delimiter ends the body.
        if rest.starts_with(b"--") {
            return None;
        }
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let content_start = head_end + 4;
        let end = content_start + find(&rest[content_start..], &delimiter)?;
        // The content ends before the CRLF that precedes the next delimiter.
        let content = &rest[content_start..end];
        let content = content.strip_suffix(b"\r\n").unwrap_or(content);
        if head.contains("name=\"file\"") {
            return Some(content);
        }
        rest = &rest[end + delimiter.len()..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_part_of_a_form_upload_is_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"redirect\"\r\n\r\n../\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.json\"\r\nContent-Type: application/json\r\n\r\n{\"users\":[]}\r\n--XyZ--\r\n";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=XyZ".parse().expect("header"),
        );
        assert_eq!(json_part(&headers, body).expect("found"), b"{\"users\":[]}");
        let plain = HeaderMap::new();
        assert_eq!(json_part(&plain, b"{}").expect("json"), b"{}");
        assert!(json_part(&headers, b"--XyZ\r\nbroken").is_err());
    }
}
