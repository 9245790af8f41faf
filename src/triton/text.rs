//! A zero-copy parser for the Prometheus text exposition format, version 0.0.4.
//!
//! Why our own: the crates on offer either drop `:` from metric names (which recording-rule
//! style names and vLLM's `vllm:num_requests_running` use) or are LGPL.
//!
//! Samples borrow slices of the body. Label values are unescaped only when they contain a
//! backslash, so the common case allocates nothing. Callers pass a name filter so that families
//! the agent does not use are skipped after reading the name, without parsing labels or value.

use std::borrow::Cow;

/// A parse error, with the 1-based line number it occurred on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number in the body.
    pub line: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

/// The kinds of malformed input the parser reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The line does not start with a valid metric name.
    #[error("invalid metric name")]
    InvalidName,
    /// A label name is missing or contains invalid characters.
    #[error("invalid label name")]
    InvalidLabelName,
    /// A label is not followed by `=`.
    #[error("expected '=' after label name")]
    ExpectedEquals,
    /// A label value does not start with `"`.
    #[error("expected '\"' to open label value")]
    ExpectedQuote,
    /// A label value runs to the end of the line.
    #[error("unterminated label value")]
    UnterminatedValue,
    /// An escape other than `\\`, `\"` or `\n`.
    #[error("invalid escape sequence in label value")]
    InvalidEscape,
    /// Labels not separated by `,` or not closed by `}`.
    #[error("expected ',' or '}}' in label set")]
    ExpectedCommaOrBrace,
    /// The sample value is missing.
    #[error("missing sample value")]
    MissingValue,
    /// The sample value is not a float, `+Inf`, `-Inf` or `NaN`.
    #[error("invalid sample value")]
    InvalidValue,
    /// The timestamp is not an integer.
    #[error("invalid timestamp")]
    InvalidTimestamp,
    /// Something follows the timestamp.
    #[error("unexpected text after sample")]
    TrailingText,
    /// A `# TYPE` line names an unknown type.
    #[error("invalid TYPE line")]
    InvalidType,
}

/// One sample line, borrowing from the body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// Metric name, e.g. `nv_inference_queue_duration_us` or `vllm:num_requests_running`.
    pub name: &'a str,
    /// The validated text between `{` and `}` (empty when there are no labels).
    labels_raw: &'a str,
    /// Whether any label value contains `\` and so needs unescaping.
    has_escapes: bool,
    /// The sample value; may be NaN or ±Inf, as the format allows.
    pub value: f64,
    /// Optional timestamp in milliseconds.
    pub timestamp: Option<i64>,
}

impl<'a> Sample<'a> {
    /// The labels, in page order. Values are unescaped only where needed.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            rest: self.labels_raw,
            escapes: self.has_escapes,
        }
    }

    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<Cow<'a, str>> {
        self.labels().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Iterator over a sample's labels. The label text was validated when the line was parsed,
/// so iteration cannot fail.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a str,
    escapes: bool,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest.trim_start_matches([' ', '\t', ',']);
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() && is_label_char(b[i], i == 0) {
            i += 1;
        }
        let key = &s[..i];
        // Skip to the opening quote (past optional blanks and '=').
        while i < b.len() && b[i] != b'"' {
            i += 1;
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() {
            match b[j] {
                b'\\' => j += 2,
                b'"' => break,
                _ => j += 1,
            }
        }
        let end = j.min(b.len());
        let raw = s.get(start..end).unwrap_or("");
        self.rest = s.get(end + 1..).unwrap_or("");
        let value = if self.escapes && raw.contains('\\') {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some((key, value))
    }
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[inline]
fn is_name_char(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || (!first && c.is_ascii_digit())
}

#[inline]
fn is_label_char(c: u8, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || (!first && c.is_ascii_digit())
}

#[inline]
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Counts of what a parse saw, for logging and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Sample lines handed to the callback.
    pub samples: usize,
    /// Sample lines skipped by the name filter.
    pub skipped: usize,
}

/// Parse `body`, calling `on_sample` for every sample whose name passes `want`.
///
/// Lines whose name fails `want` are skipped after the name is read: their labels and value are
/// neither validated nor built. Comment lines are checked only for a valid `# TYPE`.
pub fn parse<'a>(
    body: &'a str,
    mut want: impl FnMut(&str) -> bool,
    mut on_sample: impl FnMut(Sample<'a>),
) -> Result<ParseStats, ParseError> {
    let mut stats = ParseStats::default();
    for (idx, line) in body.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let b = line.as_bytes();
        let i = skip_blanks(b, 0);
        if i == b.len() {
            continue;
        }
        if b[i] == b'#' {
            check_comment(&line[i + 1..]).map_err(|kind| ParseError {
                line: idx + 1,
                kind,
            })?;
            continue;
        }
        let mut j = i;
        while j < b.len() && is_name_char(b[j], j == i) {
            j += 1;
        }
        if j == i {
            return Err(ParseError {
                line: idx + 1,
                kind: ParseErrorKind::InvalidName,
            });
        }
        let name = &line[i..j];
        if !want(name) {
            stats.skipped += 1;
            continue;
        }
        let sample = parse_rest(line, name, j).map_err(|kind| ParseError {
            line: idx + 1,
            kind,
        })?;
        stats.samples += 1;
        on_sample(sample);
    }
    Ok(stats)
}

/// Parse every sample of `body` into a vector (convenience for tests and small pages).
pub fn parse_all(body: &str) -> Result<Vec<Sample<'_>>, ParseError> {
    let mut out = Vec::new();
    parse(body, |_| true, |s| out.push(s))?;
    Ok(out)
}

fn check_comment(rest: &str) -> Result<(), ParseErrorKind> {
    let rest = rest.trim_start_matches([' ', '\t']);
    if let Some(t) = rest.strip_prefix("TYPE") {
        if !(t.starts_with(' ') || t.starts_with('\t')) {
            return Ok(()); // a plain comment that happens to start with "TYPE"
        }
        let mut parts = t.split([' ', '\t']).filter(|p| !p.is_empty());
        let _name = parts.next().ok_or(ParseErrorKind::InvalidType)?;
        match parts.next() {
            Some("counter" | "gauge" | "histogram" | "summary" | "untyped") => Ok(()),
            _ => Err(ParseErrorKind::InvalidType),
        }
    } else {
        Ok(())
    }
}

fn parse_rest<'a>(
    line: &'a str,
    name: &'a str,
    mut i: usize,
) -> Result<Sample<'a>, ParseErrorKind> {
    let b = line.as_bytes();
    // The name must end at a blank or '{': "m-x 1" is not the metric "m".
    if !matches!(b.get(i), Some(b' ' | b'\t' | b'{') | None) {
        return Err(ParseErrorKind::InvalidName);
    }
    i = skip_blanks(b, i);
    let mut labels_raw = "";
    let mut has_escapes = false;
    if i < b.len() && b[i] == b'{' {
        let open = i + 1;
        i = open;
        loop {
            i = skip_blanks(b, i);
            if i >= b.len() {
                return Err(ParseErrorKind::ExpectedCommaOrBrace);
            }
            if b[i] == b'}' {
                break;
            }
            let k = i;
            while i < b.len() && is_label_char(b[i], i == k) {
                i += 1;
            }
            if i == k {
                return Err(ParseErrorKind::InvalidLabelName);
            }
            i = skip_blanks(b, i);
            if i >= b.len() || b[i] != b'=' {
                return Err(ParseErrorKind::ExpectedEquals);
            }
            i = skip_blanks(b, i + 1);
            if i >= b.len() || b[i] != b'"' {
                return Err(ParseErrorKind::ExpectedQuote);
            }
            i += 1;
            loop {
                // memchr-like scan for the two bytes that matter.
                match b[i..].iter().position(|&c| c == b'"' || c == b'\\') {
                    None => return Err(ParseErrorKind::UnterminatedValue),
                    Some(p) => {
                        i += p;
                        if b[i] == b'"' {
                            i += 1;
                            break;
                        }
                        has_escapes = true;
                        match b.get(i + 1) {
                            Some(b'\\' | b'"' | b'n') => i += 2,
                            Some(_) => return Err(ParseErrorKind::InvalidEscape),
                            None => return Err(ParseErrorKind::UnterminatedValue),
                        }
                    }
                }
            }
            i = skip_blanks(b, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => break,
                _ => return Err(ParseErrorKind::ExpectedCommaOrBrace),
            }
        }
        labels_raw = &line[open..i];
        i += 1; // past '}'
    }
    let v0 = skip_blanks(b, i);
    if v0 == b.len() {
        return Err(ParseErrorKind::MissingValue);
    }
    let mut v1 = v0;
    while v1 < b.len() && b[v1] != b' ' && b[v1] != b'\t' {
        v1 += 1;
    }
    let value = parse_value(&line[v0..v1]).ok_or(ParseErrorKind::InvalidValue)?;
    let t0 = skip_blanks(b, v1);
    let mut timestamp = None;
    if t0 < b.len() {
        let mut t1 = t0;
        while t1 < b.len() && b[t1] != b' ' && b[t1] != b'\t' {
            t1 += 1;
        }
        timestamp = Some(
            line[t0..t1]
                .parse::<i64>()
                .map_err(|_| ParseErrorKind::InvalidTimestamp)?,
        );
        if skip_blanks(b, t1) != b.len() {
            return Err(ParseErrorKind::TrailingText);
        }
    }
    Ok(Sample {
        name,
        labels_raw,
        has_escapes,
        value,
        timestamp,
    })
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        // Go's ParseFloat (Prometheus's own parser) takes any case of nan/inf/infinity, and
        // Triton's prometheus-cpp writes "Nan" for an empty summary quantile. Rust's parser takes
        // the same spellings.
        _ => s.parse::<f64>().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, labels, value, timestamp) of a one-sample page.
    type Parsed = (String, Vec<(String, String)>, f64, Option<i64>);

    /// One row of the table below: (input, name, labels, value, timestamp).
    type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], f64, Option<i64>);

    fn one(line: &str) -> Result<Parsed, ParseError> {
        let samples = parse_all(line)?;
        assert_eq!(samples.len(), 1, "expected exactly one sample in {line:?}");
        let s = samples[0];
        Ok((
            s.name.to_string(),
            s.labels()
                .map(|(k, v)| (k.to_string(), v.into_owned()))
                .collect(),
            s.value,
            s.timestamp,
        ))
    }

    #[test]
    fn valid_lines() {
        // (input, name, labels, value, timestamp)
        let table: &[Row] = &[
            ("a 1", "a", &[], 1.0, None),
            ("a_b:c 2.5", "a_b:c", &[], 2.5, None),
            (
                "vllm:num_requests_running{model_name=\"m\"} 3",
                "vllm:num_requests_running",
                &[("model_name", "m")],
                3.0,
                None,
            ),
            (
                "m{a=\"1\",b=\"2\"} 7 1700000000000",
                "m",
                &[("a", "1"), ("b", "2")],
                7.0,
                Some(1_700_000_000_000),
            ),
            ("m{a=\"1\",} 7", "m", &[("a", "1")], 7.0, None),
            ("m{} 7", "m", &[], 7.0, None),
            (
                "m { a = \"x\" , b=\"y\" } 1",
                "m",
                &[("a", "x"), ("b", "y")],
                1.0,
                None,
            ),
            ("m\t{a=\"x\"}\t4\t-5", "m", &[("a", "x")], 4.0, Some(-5)),
            ("m{a=\"q\\\"uote\"} 1", "m", &[("a", "q\"uote")], 1.0, None),
            (
                "m{a=\"back\\\\slash\"} 1",
                "m",
                &[("a", "back\\slash")],
                1.0,
                None,
            ),
            (
                "m{a=\"new\\nline\"} 1",
                "m",
                &[("a", "new\nline")],
                1.0,
                None,
            ),
            (
                "m{a=\"with } and , inside\"} 1",
                "m",
                &[("a", "with } and , inside")],
                1.0,
                None,
            ),
            ("m{a=\"ünïcödé\"} 1", "m", &[("a", "ünïcödé")], 1.0, None),
            ("m +Inf", "m", &[], f64::INFINITY, None),
            ("m -Inf", "m", &[], f64::NEG_INFINITY, None),
            ("m 1e3", "m", &[], 1000.0, None),
            ("m -0.5", "m", &[], -0.5, None),
            ("m 1 ", "m", &[], 1.0, None),
            ("  m 1", "m", &[], 1.0, None),
            ("m 1\r", "m", &[], 1.0, None),
        ];
        for (input, name, labels, value, ts) in table {
            let (n, l, v, t) = one(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(&n, name, "{input:?}");
            let want: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(l, want, "{input:?}");
            assert_eq!(v, *value, "{input:?}");
            assert_eq!(t, *ts, "{input:?}");
        }
    }

    #[test]
    fn nan_and_inf_spellings() {
        // "Nan" is what Triton 2.51 writes for an empty summary quantile (summary-idle.prom).
        for s in ["m NaN", "m Nan", "m nan"] {
            assert!(one(s).unwrap().2.is_nan(), "{s}");
        }
        for s in ["m inf", "m +inf", "m Infinity"] {
            assert_eq!(one(s).unwrap().2, f64::INFINITY, "{s}");
        }
        assert_eq!(one("m -inf").unwrap().2, f64::NEG_INFINITY);
    }

    #[test]
    fn blank_lines_comments_and_crlf() {
        let body =
            "# HELP a help text\r\n# TYPE a counter\r\n\r\n   \r\na 1\r\n# just a comment\n\tb 2\n";
        let samples = parse_all(body).unwrap();
        let got: Vec<_> = samples.iter().map(|s| (s.name, s.value)).collect();
        assert_eq!(got, vec![("a", 1.0), ("b", 2.0)]);
    }

    #[test]
    fn malformed_lines_report_line_numbers() {
        // (body, line, kind)
        let table: &[(&str, usize, ParseErrorKind)] = &[
            ("ok 1\n1bad 2", 2, ParseErrorKind::InvalidName),
            ("ok 1\n\nm{a=1} 2", 3, ParseErrorKind::ExpectedQuote),
            ("m{a\"1\"} 2", 1, ParseErrorKind::ExpectedEquals),
            ("m{=\"1\"} 2", 1, ParseErrorKind::InvalidLabelName),
            ("m{a=\"1} 2", 1, ParseErrorKind::UnterminatedValue),
            (
                "m{a=\"1\" b=\"2\"} 2",
                1,
                ParseErrorKind::ExpectedCommaOrBrace,
            ),
            ("m{a=\"1\"", 1, ParseErrorKind::ExpectedCommaOrBrace),
            ("m{a=\"\\x\"} 2", 1, ParseErrorKind::InvalidEscape),
            ("m", 1, ParseErrorKind::MissingValue),
            ("m{a=\"1\"}", 1, ParseErrorKind::MissingValue),
            ("m abc", 1, ParseErrorKind::InvalidValue),
            ("m 0x10", 1, ParseErrorKind::InvalidValue),
            ("m 1,5", 1, ParseErrorKind::InvalidValue),
            ("m 1 abc", 1, ParseErrorKind::InvalidTimestamp),
            ("m 1 2 3", 1, ParseErrorKind::TrailingText),
            ("a 1\n# TYPE a flounder\n", 2, ParseErrorKind::InvalidType),
            ("m-x 1", 1, ParseErrorKind::InvalidName),
        ];
        for (body, line, kind) in table {
            let err = parse_all(body).expect_err(body);
            assert_eq!(err.line, *line, "{body:?}");
            assert_eq!(&err.kind, kind, "{body:?}");
            assert!(err.to_string().starts_with(&format!("line {line}:")));
        }
    }

    #[test]
    fn filter_skips_without_parsing() {
        // The skipped line is malformed after its name; skipping must not look at it.
        let body = "skip_me{broken 1\nkeep 2\n";
        let mut got = Vec::new();
        let stats = parse(body, |n| n == "keep", |s| got.push(s.value)).unwrap();
        assert_eq!(got, vec![2.0]);
        assert_eq!(
            stats,
            ParseStats {
                samples: 1,
                skipped: 1
            }
        );
    }

    #[test]
    fn label_lookup() {
        let s = parse_all("m{model=\"fast\",version=\"1\"} 3").unwrap()[0];
        assert_eq!(s.label("model").as_deref(), Some("fast"));
        assert_eq!(s.label("version").as_deref(), Some("1"));
        assert_eq!(s.label("nope"), None);
        // Borrowed when there is no escape.
        assert!(matches!(s.label("model"), Some(Cow::Borrowed(_))));
    }
}
