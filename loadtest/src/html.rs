//! The HTML report: one file, its data embedded as JSON and its charts drawn as SVG
//! by a small script in the page, so it opens anywhere, offline, and the numbers in
//! the charts are the numbers in `report.json`.

use crate::report::Report;

const PAGE: &str = include_str!("report.html");

/// The page for `report`.
pub fn render(report: &Report) -> String {
    let data = serde_json::to_string(report).expect("the report serializes");
    PAGE.replace(
        "{{title}}",
        &escape(&format!("otpd-loadtest: {}", report.scenario)),
    )
    .replace("{{data}}", &script_safe(&data))
}

/// Text for HTML content.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JSON that cannot end its `<script>` element early nor open a comment: `<` is
/// written as its escape, which JSON reads back the same.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_data_cannot_close_its_script() {
        let s = script_safe(r#"{"description":"</script><script>alert(1)</script>"}"#);
        assert!(!s.contains("</script"));
        let back: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(back["description"], "</script><script>alert(1)</script>");
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
    }
}
