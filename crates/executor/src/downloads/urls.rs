//! What rbuild shows and derives of an `ADD` URL: credentials redacted wherever a URL may
//! appear, and the file name BuildKit gives a download.

use super::git_source;

/// `url` with any `user:password@` replaced, for messages.
/// `text` (a Dockerfile line, a message) with the credentials of every URL in it redacted.
pub(crate) fn redact_credentials(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    text.split_inclusive(char::is_whitespace)
        .map(|word| {
            let trimmed = word.trim_end();
            let start = trimmed.find("://").map_or(trimmed.len(), |i| {
                trimmed[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
                    .map_or(0, |j| j + 1)
            });
            if start == trimmed.len() {
                return word.to_string();
            }
            format!(
                "{}{}{}",
                &trimmed[..start],
                redact_url(&trimmed[start..]),
                &word[trimmed.len()..]
            )
        })
        .collect()
}

pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://xxxxx@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

pub(super) fn redact_text(text: &str, url: &str, shown: &str) -> String {
    text.replace(url, shown)
}

/// The file name BuildKit gives a download: the last element of the URL's path, or
/// `__unnamed__`.
pub(crate) fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let base = path
        .split('/')
        .rev()
        .find(|c| !c.is_empty())
        .map(percent_decode)
        .unwrap_or_default();
    if base.is_empty() || base == "." || base == ".." || base.contains('/') {
        "__unnamed__".to_string()
    } else {
        base
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether ADD treats `src` as an http(s) download (a `.git` URL is a repository).
pub(crate) fn is_http_source(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && git_source(src).is_none()
}
