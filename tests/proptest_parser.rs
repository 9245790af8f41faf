//! Property tests of the text parser: generated valid pages round-trip exactly (names with
//! `:`, label values with escapes and any Unicode, blanks and tabs, trailing commas, CRLF,
//! HELP/TYPE/comment lines, ±Inf/NaN, timestamps); a corrupted line is reported with its line
//! number; the name filter agrees with the full parse; arbitrary text never panics.
// Test code: a panic here is a failed test, not a crashed agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use triton_sidecar::triton::snapshot::Snapshot;
use triton_sidecar::triton::text::{self, ParseErrorKind};

#[derive(Debug, Clone)]
struct Line {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    value_text: String,
    timestamp: Option<i64>,
    // Layout.
    sep: String,
    trailing_comma: bool,
    inner_blank: String,
    indent: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Line {
    fn render(&self) -> String {
        let mut s = format!("{}{}", self.indent, self.name);
        if !self.labels.is_empty() || self.trailing_comma {
            s.push_str(&self.sep[..1.min(self.sep.len())]);
            s.push('{');
            let b = &self.inner_blank;
            let parts: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{b}{k}{b}={b}\"{}\"{b}", escape(v)))
                .collect();
            s.push_str(&parts.join(","));
            if self.trailing_comma && !self.labels.is_empty() {
                s.push(',');
            }
            s.push('}');
        }
        s.push_str(&self.sep);
        s.push_str(&self.value_text);
        if let Some(ts) = self.timestamp {
            s.push_str(&self.sep);
            s.push_str(&ts.to_string());
        }
        s
    }
}

fn metric_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,24}",
        Just("nv_inference_request_success".to_string()),
        Just("vllm:num_requests_running".to_string()),
        Just("nv_inference_queue_duration_us".to_string()),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._-]{0,12}",
        // Anything, including quotes, backslashes, newlines, braces, commas, tabs, CR, Unicode.
        any::<String>(),
        proptest::collection::vec(
            prop_oneof![
                Just("\\"),
                Just("\""),
                Just("\n"),
                Just("}"),
                Just(","),
                Just("="),
                Just(" "),
                Just("é"),
                Just("\t"),
                Just("x")
            ],
            0..10
        )
        .prop_map(|v| v.concat()),
    ]
}

fn value() -> impl Strategy<Value = (f64, String)> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| (v, format!("{v:?}"))),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| (v, format!("{v:e}"))),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| (v, format!("{v}"))),
        any::<u64>().prop_map(|v| (v as f64, v.to_string())),
        any::<i32>().prop_map(|v| (v as f64, format!("{v:+}"))),
        Just((f64::INFINITY, "+Inf".to_string())),
        Just((f64::NEG_INFINITY, "-Inf".to_string())),
        Just((f64::NAN, "NaN".to_string())),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    (
        metric_name(),
        proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,10}", label_value()), 0..5),
        value(),
        proptest::option::of(any::<i64>()),
        prop_oneof![Just(" "), Just("\t"), Just("  \t ")],
        any::<bool>(),
        prop_oneof![Just(""), Just(" "), Just("\t")],
        prop_oneof![Just(""), Just("  "), Just("\t")],
    )
        .prop_map(
            |(
                name,
                labels,
                (value, value_text),
                timestamp,
                sep,
                trailing_comma,
                inner_blank,
                indent,
            )| Line {
                name,
                labels,
                value,
                value_text,
                timestamp,
                sep: sep.to_string(),
                trailing_comma,
                inner_blank: inner_blank.to_string(),
                indent: indent.to_string(),
            },
        )
}

#[derive(Debug, Clone)]
enum Item {
    Sample(Line),
    Help(String),
    Type(&'static str),
    Comment(String),
    Blank(String),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => line().prop_map(Item::Sample),
        1 => "[^\n\r]{0,30}".prop_map(Item::Help),
        1 => prop_oneof![Just("counter"), Just("gauge"), Just("histogram"), Just("summary"), Just("untyped")].prop_map(Item::Type),
        1 => "[^\n\r]{0,30}".prop_map(Item::Comment),
        1 => prop_oneof![Just(""), Just(" "), Just("\t \t")].prop_map(|s| Item::Blank(s.to_string())),
    ]
}

fn render_page(items: &[Item], crlf: bool) -> String {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    for it in items {
        match it {
            Item::Sample(l) => out.push_str(&l.render()),
            Item::Help(h) => out.push_str(&format!("# HELP some_metric {h}")),
            Item::Type(t) => out.push_str(&format!("# TYPE some_metric {t}")),
            Item::Comment(c) => out.push_str(&format!("# note: {c}")),
            Item::Blank(b) => out.push_str(b),
        }
        out.push_str(nl);
    }
    out
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_pages_round_trip(items in proptest::collection::vec(item(), 0..40), crlf in any::<bool>()) {
        let page = render_page(&items, crlf);
        let got = text::parse_all(&page).map_err(|e| TestCaseError::fail(format!("{e}\n{page:?}")))?;
        let want: Vec<&Line> = items.iter().filter_map(|i| match i { Item::Sample(l) => Some(l), _ => None }).collect();
        prop_assert_eq!(got.len(), want.len());
        for (s, l) in got.iter().zip(want) {
            prop_assert_eq!(s.name, l.name.as_str());
            let labels: Vec<(String, String)> = s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
            prop_assert_eq!(&labels, &l.labels, "line {:?}", l.render());
            prop_assert!(same(s.value, l.value), "{} vs {} in {:?}", s.value, l.value, l.render());
            prop_assert_eq!(s.timestamp, l.timestamp);
            for (k, v) in &l.labels {
                let first = l.labels.iter().find(|(k2, _)| k2 == k).unwrap();
                let found = s.label(k);
                prop_assert_eq!(found.as_deref(), Some(first.1.as_str()), "label {}={:?}", k, v);
                if !first.1.contains(['\\', '"', '\n']) {
                    prop_assert!(matches!(s.label(k), Some(std::borrow::Cow::Borrowed(_))), "unescaped values borrow");
                }
            }
        }
        // The filtered parse sees the same samples, and counts the rest as skipped.
        let mut kept = Vec::new();
        let stats = text::parse(&page, |n| n.len() % 2 == 0, |s| kept.push(s.name)).unwrap();
        let expect: Vec<&str> = got.iter().map(|s| s.name).filter(|n| n.len() % 2 == 0).collect();
        prop_assert_eq!(&kept, &expect);
        prop_assert_eq!(stats.samples + stats.skipped, got.len());
        // Snapshot::parse accepts whatever the full parser accepts.
        prop_assert!(Snapshot::parse(&page).is_ok());
    }

    #[test]
    fn a_corrupt_line_is_reported_with_its_number(
        items in proptest::collection::vec(item(), 0..20),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![
            Just(("1abc 2", ParseErrorKind::InvalidName)),
            Just(("m{a=1} 2", ParseErrorKind::ExpectedQuote)),
            Just(("m{a=\"x} 2", ParseErrorKind::UnterminatedValue)),
            Just(("m{a=\"\\q\"} 2", ParseErrorKind::InvalidEscape)),
            Just(("m two", ParseErrorKind::InvalidValue)),
            Just(("m 1 soon", ParseErrorKind::InvalidTimestamp)),
            Just(("m 1 2 3", ParseErrorKind::TrailingText)),
            Just(("m", ParseErrorKind::MissingValue)),
            Just(("# TYPE m flounder", ParseErrorKind::InvalidType)),
        ],
    ) {
        let mut page_items = items.clone();
        let k = if page_items.is_empty() { 0 } else { at.index(page_items.len() + 1) };
        page_items.insert(k, Item::Comment(String::new())); // placeholder, replaced below
        let mut lines: Vec<String> = render_page(&page_items, false).split('\n').map(str::to_string).collect();
        lines[k] = bad.0.to_string();
        let page = lines.join("\n");
        let err = text::parse_all(&page).expect_err("corrupt line must fail");
        prop_assert_eq!(err.line, k + 1);
        prop_assert_eq!(&err.kind, &bad.1);
        let prefix = format!("line {}:", k + 1);
        prop_assert!(err.to_string().starts_with(&prefix), "{}", err);
    }

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        let _ = text::parse_all(&s);
        let _ = Snapshot::parse(&s);
    }

    #[test]
    fn arbitrary_lines_of_format_tokens_never_panic(
        parts in proptest::collection::vec(prop_oneof![
            Just("m"), Just("{"), Just("}"), Just("a"), Just("="), Just("\""), Just("\\"), Just(","),
            Just(" "), Just("\t"), Just("\n"), Just("\r"), Just("1"), Just("NaN"), Just("+Inf"),
            Just("# TYPE "), Just("counter"), Just("model"), Just("nv_inference_request_success"), Just("é"),
        ], 0..60)
    ) {
        let s = parts.concat();
        let full = text::parse_all(&s);
        let snap = Snapshot::parse(&s);
        if full.is_ok() {
            prop_assert!(snap.is_ok());
        }
    }
}
