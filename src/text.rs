//! Small string helpers shared by modules that otherwise know nothing of
//! each other (the proxy's explanations, the trace span rules, the webhook
//! outbox's last error, the HTML pages of the relay and of fakedog).

use std::borrow::Cow;

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// HTML-escapes text for element content and attribute values.
pub(crate) fn html_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Reverses [`html_escape`] (for fakedog's browser helper reading its own
/// forms).
pub(crate) fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clips_on_a_character_boundary() {
        assert_eq!(super::clip("héllo", 2), "h");
        assert_eq!(super::clip("héllo", 3), "hé");
        assert_eq!(super::clip("abc", 10), "abc");
    }

    #[test]
    fn html_escaping_round_trips() {
        let s = r#"<script>alert("x&y's")</script>"#;
        let e = super::html_escape(s);
        assert!(!e.contains('<') && !e.contains('"') && !e.contains('\''));
        assert_eq!(super::html_unescape(&e), s);
    }
}
