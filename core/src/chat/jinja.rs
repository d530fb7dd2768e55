//! Rendering a model file's own chat template (`tokenizer.chat_template`) with
//! `minijinja`, in the dialect Hugging Face `transformers` uses
//! (`utils/chat_template_utils.py`): Jinja2 with `trim_blocks` and `lstrip_blocks`, loop
//! controls, Python string methods (`minijinja-contrib`'s pycompat), and the globals HF
//! provides:
//!
//! * `messages` (each `{role, content}`), `add_generation_prompt`, `bos_token`,
//!   `eos_token`;
//! * `raise_exception(msg)` fails the render with `msg`;
//! * `strftime_now(fmt)`: the current UTC time formatted as Python's `strftime` does in
//!   the C locale (codes below; a fixed time can be set for reproducible prompts);
//! * `tojson(indent=None)` as HF's: `json.dumps(x, ensure_ascii=False)` spacing
//!   (`", "` and `": "`, or newlines and `","` with an indent), keys in insertion order.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};

use super::Message;
use crate::error::{Error, Result};

/// A chat template from a model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JinjaTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    /// Seconds since 1970 (UTC) that `strftime_now` reports; `None` = the clock.
    now: Option<i64>,
}

impl JinjaTemplate {
    /// Compiles `source` once to check it; `bos_token` / `eos_token` are the texts the
    /// template sees (empty when the vocabulary has none).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<JinjaTemplate> {
        let t = JinjaTemplate {
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            now: None,
        };
        let env = t.env();
        env.template_from_str(&t.source).map_err(|e| {
            Error::format(
                "tokenizer.chat_template",
                format!("not a template minijinja reads: {e:#}"),
            )
        })?;
        Ok(t)
    }

    /// Fixes the time `strftime_now` reports (seconds since 1970, UTC).
    pub fn with_now(mut self, unix_seconds: i64) -> Self {
        self.now = Some(unix_seconds);
        self
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS text the template sees.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// The EOS text the template sees.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    fn env(&self) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let now = self.now;
        env.add_function("strftime_now", move |fmt: String| {
            let secs = now.unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            });
            strftime(&fmt, secs)
        });
        env.add_filter("tojson", tojson);
        env
    }

    /// Renders `messages`; `add_generation_prompt` asks for the assistant header. Fails
    /// when the template raises (`raise_exception`) or hits an error.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.env();
        let err = |e: minijinja::Error| Error::invalid(format!("chat template: {e:#}"));
        let tmpl = env.template_from_str(&self.source).map_err(err)?;
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_iter([("role", Value::from(m.role)), ("content", Value::from(m.content))]))
            .collect();
        tmpl.render(minijinja::context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        })
        .map_err(err)
    }
}

/// HF's `tojson` filter: `json.dumps(value, ensure_ascii=False, indent=indent)`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&mut out, &value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    depth: usize,
) -> std::result::Result<(), minijinja::Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).unwrap_or_default()),
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                let key = k.as_str().map_or_else(|| k.to_string(), str::to_owned);
                out.push_str(&serde_json::to_string(&key).unwrap_or_default());
                out.push_str(": ");
                write_json(out, &v.get_item(k)?, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                write_json(out, x, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a {} value", v.kind()),
            ))
        }
    }
    Ok(())
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01 (the proleptic
/// Gregorian calendar; Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Python's `time.strftime(fmt)` in the C locale for UTC time `secs`: `%Y %y %m %d %e
/// %j %H %I %M %S %p %b %B %h %a %A %w %%` and the glibc no-padding forms (`%-d`, …); any
/// other code is copied as written.
pub fn strftime(fmt: &str, secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (tod / 3600, tod / 60 % 60, tod % 60);
    let wday = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - (civil_days(y, 1, 1)) + 1;
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let pad = chars.peek() != Some(&'-');
        if !pad {
            chars.next();
        }
        let num = |v: i64, width: usize| {
            if pad {
                format!("{v:0width$}")
            } else {
                v.to_string()
            }
        };
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&num(y.rem_euclid(100), 2)),
            Some('m') => out.push_str(&num(m.into(), 2)),
            Some('d') => out.push_str(&num(d.into(), 2)),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('j') => out.push_str(&num(yday, 3)),
            Some('H') => out.push_str(&num(hh, 2)),
            Some('I') => out.push_str(&num((hh + 11) % 12 + 1, 2)),
            Some('M') => out.push_str(&num(mm, 2)),
            Some('S') => out.push_str(&num(ss, 2)),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('b') | Some('h') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('a') => out.push_str(&DAYS[wday][..3]),
            Some('A') => out.push_str(DAYS[wday]),
            Some('w') => out.push_str(&wday.to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if !pad {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
fn civil_days(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_matches_python() {
        // Python: time.strftime(fmt, time.gmtime(1733300000)) (2024-12-04 08:13:20 UTC, a Wednesday).
        let t = 1_733_300_000;
        assert_eq!(strftime("%d %b %Y", t), "04 Dec 2024");
        assert_eq!(
            strftime("%-d %B %Y, %A %H:%M:%S %p %j %y %m %a %e %%", t),
            "4 December 2024, Wednesday 08:13:20 AM 339 24 12 Wed  4 %"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
        assert_eq!(strftime("%Y-%m-%d %w", 951_782_400), "2000-02-29 2");
        assert_eq!(strftime("%Q", 0), "%Q");
        for days in [-800_000i64, -1, 0, 59, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(civil_days(y, m, d), days);
        }
    }

    #[test]
    fn tojson_like_python() {
        let t = JinjaTemplate::new(
            "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ [] | tojson }}|{{ 'é\"\n' | tojson }}",
            "",
            "",
        )
        .unwrap();
        let env = t.env();
        let tmpl = env.template_from_str(&t.source).unwrap();
        let x = Value::from_iter([
            ("b", Value::from(1)),
            ("a", Value::from(vec![Value::from(true), Value::from(())])),
        ]);
        let s = tmpl.render(minijinja::context! { x => x }).unwrap();
        // json.dumps({"b": 1, "a": [True, None]}, ensure_ascii=False) and with indent=2.
        assert_eq!(
            s,
            "{\"b\": 1, \"a\": [true, null]}|{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null\n  ]\n}|[]|\"é\\\"\\n\""
        );
    }

    #[test]
    fn raise_exception_fails_the_render() {
        let t = JinjaTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        let e = t.render(&[], true).unwrap_err().to_string();
        assert!(e.contains("roles must alternate"), "{e}");
        assert!(JinjaTemplate::new("{% if %}", "", "").is_err());
    }
}
