//! Go's `path/filepath.Clean` and `Dir` for `/`-separated paths. Docker cleans every
//! pattern with them, so `a/./b`, `a//b` and `a/c/../b` are the same pattern.

/// Lexically shortest equivalent path: no empty or `.` elements, `..` resolved where a
/// preceding element exists (dropped at the root), `.` for an empty result.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(last) if *last != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Everything before the last `/`, cleaned (`.` if there is no `/`).
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(index) => clean(&path[..=index]),
        None => ".".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        let cases = [
            ("", "."),
            (".", "."),
            ("a/b/", "a/b"),
            ("a//b", "a/b"),
            ("./a/./b/.", "a/b"),
            ("a/c/../b", "a/b"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("../../x/..", "../.."),
            ("/../a", "/a"),
            ("/", "/"),
            ("//", "/"),
            ("!docs/../x", "x"),
            ("**/", "**"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean(input), expected, "clean({input:?})");
        }
    }

    #[test]
    fn dir_like_go() {
        assert_eq!(dir("a/b/c"), "a/b");
        assert_eq!(dir("a"), ".");
        assert_eq!(dir("a/b/"), "a/b");
        assert_eq!(dir("/a"), "/");
        assert_eq!(dir("/any/path/there"), "/any/path");
    }
}
