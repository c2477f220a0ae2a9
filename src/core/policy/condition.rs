//! Condition operators, compiled once and evaluated against a [`Context`].
//!
//! Semantics (AWS IAM User Guide, "Condition operators" and "Single-valued vs. multivalued
//! context keys"): values of one key are ORed; a negated operator (`StringNotEquals`,
//! `NotIpAddress`, …) is the negation of its positive form, so it matches a missing key;
//! `…IfExists` matches a missing key; `ForAllValues:` matches a missing or empty key and
//! otherwise needs every request value to satisfy the operator; `ForAnyValue:` needs one.

use std::net::IpAddr;

use super::glob::{Syntax, Template, split_arn};
use super::{Context, over_match_cap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn holds<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

/// The positive form of an operator with its compiled policy values.
#[derive(Debug, Clone)]
enum Test {
    /// StringEquals/EqualsIgnoreCase/Like (the template carries wildcard and case rules).
    String(Vec<Template>),
    Numeric(Cmp, Vec<f64>),
    /// Nanoseconds since the Unix epoch.
    Date(Cmp, Vec<i128>),
    Bool(Vec<bool>),
    Binary(Vec<Box<str>>),
    Ip(Vec<Cidr>),
    Arn(Vec<ArnPattern>),
    /// `Null`: true means "the key must be absent"; several values are ORed.
    Null(Vec<bool>),
}

#[derive(Debug, Clone)]
pub(crate) struct Condition {
    /// Lowercased condition key.
    key: Box<str>,
    qualifier: Qualifier,
    negated: bool,
    if_exists: bool,
    test: Test,
}

impl Condition {
    /// Compiles one `"Operator": {"key": values}` entry; `values` are already strings.
    pub fn compile(
        operator: &str,
        key: &str,
        values: &[String],
        variables: bool,
    ) -> Result<Condition, String> {
        let (qualifier, rest) = split_qualifier(operator);
        let (base, if_exists) = match strip_suffix_ci(rest, "IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(format!("invalid condition key {key:?}"));
        }
        if values.is_empty() {
            return Err("a condition key needs at least one value".into());
        }
        let base_lc = base.to_ascii_lowercase();
        let (negated, test) = compile_test(&base_lc, values, variables)
            .ok_or_else(|| format!("unknown condition operator {operator:?}"))??;
        if matches!(test, Test::Null(_)) && (if_exists || qualifier != Qualifier::Single) {
            return Err(format!(
                "{operator:?}: Null takes neither IfExists nor ForAnyValue/ForAllValues"
            ));
        }
        Ok(Condition {
            key: key.to_lowercase().into_boxed_str(),
            qualifier,
            negated,
            if_exists,
            test,
        })
    }

    pub fn holds(&self, ctx: &Context) -> bool {
        let values = ctx.get_lowercase(&self.key).filter(|v| !v.is_empty());
        if let Test::Null(want_absent) = &self.test {
            // AWS ORs a key's values under every operator: ["true","false"] always holds.
            return want_absent.contains(&values.is_none());
        }
        let Some(values) = values else {
            return match self.qualifier {
                Qualifier::ForAllValues => true,
                Qualifier::ForAnyValue => self.if_exists,
                Qualifier::Single => self.if_exists || self.negated,
            };
        };
        match self.qualifier {
            Qualifier::Single => values.iter().any(|v| self.positive(v, ctx)) != self.negated,
            Qualifier::ForAnyValue => values.iter().any(|v| self.positive(v, ctx) != self.negated),
            Qualifier::ForAllValues => values.iter().all(|v| self.positive(v, ctx) != self.negated),
        }
    }

    /// Does one request value match any policy value under the positive operator?
    fn positive(&self, value: &str, ctx: &Context) -> bool {
        if over_match_cap(value) {
            // No policy value is that long (they are capped at parse): bounded work.
            return false;
        }
        match &self.test {
            Test::String(templates) => templates.iter().any(|t| t.matches(value, ctx)),
            Test::Numeric(cmp, numbers) => {
                parse_number(value).is_some_and(|v| numbers.iter().any(|&p| cmp.holds(v, p)))
            }
            Test::Date(cmp, dates) => {
                parse_date(value).is_some_and(|v| dates.iter().any(|&p| cmp.holds(v, p)))
            }
            Test::Bool(bools) => parse_bool(value).is_some_and(|v| bools.contains(&v)),
            Test::Binary(blobs) => blobs.iter().any(|b| **b == *value),
            Test::Ip(cidrs) => {
                parse_ip(value).is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip)))
            }
            Test::Arn(patterns) => patterns.iter().any(|p| p.matches(value, ctx)),
            Test::Null(_) => false,
        }
    }
}

fn split_qualifier(operator: &str) -> (Qualifier, &str) {
    if let Some(rest) = strip_prefix_ci(operator, "ForAnyValue:") {
        (Qualifier::ForAnyValue, rest)
    } else if let Some(rest) = strip_prefix_ci(operator, "ForAllValues:") {
        (Qualifier::ForAllValues, rest)
    } else {
        (Qualifier::Single, operator)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn strip_suffix_ci<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let at = s.len().checked_sub(suffix.len())?;
    let tail = s.get(at..)?;
    (tail.eq_ignore_ascii_case(suffix) && at > 0).then(|| &s[..at])
}

type Compiled = Result<(bool, Test), String>;

/// `None` when the operator is unknown; otherwise `(negated, test)` or a value error.
fn compile_test(base: &str, values: &[String], variables: bool) -> Option<Compiled> {
    let string = |wildcards: bool, ignore_case: bool, negated: bool| -> Compiled {
        let syntax = Syntax {
            wildcards,
            variables,
            ignore_case,
        };
        let templates = values
            .iter()
            .map(|v| Template::parse(v, syntax))
            .collect::<Result<_, _>>()?;
        Ok((negated, Test::String(templates)))
    };
    let numeric = |cmp: Cmp, negated: bool| -> Compiled {
        let numbers = each(values, |v| {
            parse_number(v).ok_or_else(|| format!("{v:?} is not a number"))
        })?;
        Ok((negated, Test::Numeric(cmp, numbers)))
    };
    let date = |cmp: Cmp, negated: bool| -> Compiled {
        let dates = each(values, |v| {
            parse_date(v).ok_or_else(|| format!("{v:?} is not an ISO 8601 date or epoch seconds"))
        })?;
        Ok((negated, Test::Date(cmp, dates)))
    };
    let arn = |negated: bool| -> Compiled {
        let patterns = each(values, |v| ArnPattern::parse(v, variables))?;
        Ok((negated, Test::Arn(patterns)))
    };
    let ip = |negated: bool| -> Compiled {
        let cidrs = each(values, |v| {
            Cidr::parse(v).ok_or_else(|| format!("{v:?} is not an IP address or CIDR"))
        })?;
        Ok((negated, Test::Ip(cidrs)))
    };
    Some(match base {
        "stringequals" => string(false, false, false),
        "stringnotequals" => string(false, false, true),
        "stringequalsignorecase" => string(false, true, false),
        "stringnotequalsignorecase" => string(false, true, true),
        "stringlike" => string(true, false, false),
        "stringnotlike" => string(true, false, true),
        "numericequals" => numeric(Cmp::Eq, false),
        "numericnotequals" => numeric(Cmp::Eq, true),
        "numericlessthan" => numeric(Cmp::Lt, false),
        "numericlessthanequals" => numeric(Cmp::Le, false),
        "numericgreaterthan" => numeric(Cmp::Gt, false),
        "numericgreaterthanequals" => numeric(Cmp::Ge, false),
        "dateequals" => date(Cmp::Eq, false),
        "datenotequals" => date(Cmp::Eq, true),
        "datelessthan" => date(Cmp::Lt, false),
        "datelessthanequals" => date(Cmp::Le, false),
        "dategreaterthan" => date(Cmp::Gt, false),
        "dategreaterthanequals" => date(Cmp::Ge, false),
        "bool" => each(values, |v| {
            parse_bool(v).ok_or_else(|| format!("{v:?} is not true or false"))
        })
        .map(|b| (false, Test::Bool(b))),
        "binaryequals" => each(values, |v| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .map(|_| Box::from(v))
                .map_err(|_| format!("{v:?} is not base64"))
        })
        .map(|b| (false, Test::Binary(b))),
        "ipaddress" => ip(false),
        "notipaddress" => ip(true),
        "arnequals" | "arnlike" => arn(false),
        "arnnotequals" | "arnnotlike" => arn(true),
        "null" => each(values, |v| {
            parse_bool(v).ok_or_else(|| format!("{v:?} is not true or false"))
        })
        .map(|b| (false, Test::Null(b))),
        _ => return None,
    })
}

fn each<T>(values: &[String], f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    values.iter().map(|v| f(v)).collect()
}

fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Integers and decimals (`-3`, `1.5`, `1e3`); never NaN or infinity.
pub(crate) fn parse_number(v: &str) -> Option<f64> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    ok.then(|| v.parse::<f64>().ok())
        .flatten()
        .filter(|n| n.is_finite())
}

/// ISO 8601 (`2020-01-01`, `2020-01-01T12:00Z`, `…T12:00:00.5+02:00`; no zone means UTC)
/// or epoch seconds (`1577836800`, optionally fractional). Nanoseconds since the epoch.
pub(crate) fn parse_date(v: &str) -> Option<i128> {
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_number(v)
            .filter(|s| s.abs() < 1e13)
            .map(|s| (s * 1e9).round() as i128);
    }
    parse_iso8601(v)
}

fn parse_iso8601(v: &str) -> Option<i128> {
    let b = v.as_bytes();
    let digits = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || s.len() > 9 {
            return None;
        }
        s.iter().try_fold(0u32, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(digits(&b[0..4])?).ok()?;
    let month = time::Month::try_from(u8::try_from(digits(&b[5..7])?).ok()?).ok()?;
    let day = u8::try_from(digits(&b[8..10])?).ok()?;
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let mut rest = &b[10..];
    let (mut hour, mut minute, mut second, mut nanos) = (0u8, 0u8, 0u8, 0u32);
    if let Some((b'T' | b't', r)) = rest.split_first() {
        if r.len() < 5 || r[2] != b':' {
            return None;
        }
        hour = u8::try_from(digits(&r[0..2])?).ok()?;
        minute = u8::try_from(digits(&r[3..5])?).ok()?;
        rest = &r[5..];
        if rest.first() == Some(&b':') {
            second = u8::try_from(digits(rest.get(1..3)?)?).ok()?;
            rest = &rest[3..];
            if rest.first() == Some(&b'.') {
                let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if len == 0 {
                    return None;
                }
                let frac = &rest[1..1 + len.min(9)];
                nanos = digits(frac)? * 10u32.pow(9 - frac.len() as u32);
                rest = &rest[1 + len..];
            }
        }
    }
    let offset_seconds: i32 = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), zone @ ..] => {
            let (h, m) = match zone {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let s = (h * 3600 + m * 60) as i32;
            if *sign == b'-' { -s } else { s }
        }
        _ => return None,
    };
    let time = time::Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    let local = time::PrimitiveDateTime::new(date, time).assume_utc();
    Some(local.unix_timestamp_nanos() - i128::from(offset_seconds) * 1_000_000_000)
}

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v4: bool,
    network: u128,
    prefix: u8,
}

impl Cidr {
    pub fn parse(v: &str) -> Option<Cidr> {
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a, Some(p.parse::<u8>().ok()?))
            }
            None => (v, None),
        };
        let (v4, bits, width) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (false, u128::from(a), 128),
        };
        let prefix = prefix.unwrap_or(width);
        if prefix > width {
            return None;
        }
        Some(Cidr {
            v4,
            network: bits & mask(prefix, width),
            prefix,
        })
    }

    /// True for a network that holds every address of its family (`/0`).
    pub fn is_everything(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4, bits, width) = match ip {
            IpAddr::V4(a) => (true, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => (true, u128::from(u32::from(a)), 32),
                None => (false, u128::from(a), 128),
            },
        };
        v4 == self.v4 && bits & mask(self.prefix, width) == self.network
    }
}

fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if width == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all & !all.checked_shr(u32::from(prefix)).unwrap_or(0)
    }
}

fn parse_ip(v: &str) -> Option<IpAddr> {
    v.parse().ok()
}

/// An ARN pattern, matched segment by segment (`*` and `?` stay within a segment, except in
/// the final resource segment which runs to the end of the ARN). Used by `Resource` and the
/// `Arn*` operators.
#[derive(Debug, Clone)]
pub(crate) enum ArnPattern {
    Any,
    Segments(Box<[Template; 6]>),
}

impl ArnPattern {
    pub fn parse(v: &str, variables: bool) -> Result<ArnPattern, String> {
        if !v.is_empty() && v.bytes().all(|b| b == b'*') {
            return Ok(ArnPattern::Any);
        }
        let parts = split_arn(v);
        let [prefix, partition, service, _, _, resource] = parts.as_slice() else {
            return Err(format!(
                "malformed ARN {v:?}: expected arn:partition:service:region:account:resource"
            ));
        };
        if *prefix != "arn" || partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(format!(
                "malformed ARN {v:?}: expected arn:partition:service:region:account:resource"
            ));
        }
        let syntax = Syntax {
            wildcards: true,
            variables,
            ignore_case: false,
        };
        let mut segments = parts.iter().map(|p| Template::parse(p, syntax));
        #[allow(clippy::expect_used)] // `parts` was checked to hold six segments
        let mut next = || segments.next().expect("six segments");
        Ok(ArnPattern::Segments(Box::new([
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
            next()?,
        ])))
    }

    pub fn matches(&self, arn: &str, ctx: &Context) -> bool {
        self.matches_split(&ArnParts::split(arn), ctx)
    }

    /// Matching against an ARN split once per request.
    pub fn matches_split(&self, arn: &ArnParts, ctx: &Context) -> bool {
        match self {
            ArnPattern::Any => true,
            ArnPattern::Segments(segments) => match &arn.0 {
                // The partition (segment 1) is ignored: Stint's engine is partition-agnostic,
                // so AWS documentation policies (`arn:aws:…`) govern `arn:stint:…` resources.
                Some(parts) => segments
                    .iter()
                    .zip(parts)
                    .enumerate()
                    .all(|(i, (segment, part))| i == 1 || segment.matches(part, ctx)),
                None => false,
            },
        }
    }
}

/// An ARN's six segments (the last runs to the end), or `None` for a non-ARN string.
pub(crate) struct ArnParts<'a>(Option<[&'a str; 6]>);

impl<'a> ArnParts<'a> {
    pub fn split(arn: &'a str) -> Self {
        let mut parts = [""; 6];
        let mut start = 0;
        let mut n = 0;
        for (i, b) in arn.bytes().enumerate() {
            if b == b':' {
                parts[n] = &arn[start..i];
                start = i + 1;
                n += 1;
                if n == 5 {
                    break;
                }
            }
        }
        if n < 5 {
            return ArnParts(None);
        }
        parts[5] = &arn[start..];
        ArnParts(Some(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(op: &str, key: &str, values: &[&str]) -> Condition {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        Condition::compile(op, key, &values, true).unwrap()
    }

    #[test]
    fn dates() {
        let day = 86_400_000_000_000i128;
        let rows = [
            ("1970-01-02", Some(day)),
            ("1970-01-02T00:00:00Z", Some(day)),
            ("1970-01-02T00:00Z", Some(day)),
            ("1970-01-02T02:00:00+02:00", Some(day)),
            ("1970-01-01T22:00:00-0200", Some(day)),
            ("1970-01-02T00:00:00.5Z", Some(day + 500_000_000)),
            ("86400", Some(day)),
            ("2020-02-30", None),
            ("2020-01-01T25:00:00Z", None),
            ("yesterday", None),
            ("2020-01-01T00:00:00Q", None),
            ("", None),
            ("-", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_date(text), want, "{text}");
        }
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.7".parse().unwrap()));
        assert!(!c.contains("203.0.114.7".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
        let c6 = Cidr::parse("2001:DB8:1234:5678::/64").unwrap();
        assert!(c6.contains("2001:db8:1234:5678::1".parse().unwrap()));
        assert!(!c6.contains("2001:db8:1234:5679::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        // Bare addresses are /32 and /128 hosts.
        let host6 = Cidr::parse("2001:db8::1").unwrap();
        assert!(host6.contains("2001:db8::1".parse().unwrap()));
        assert!(!host6.contains("2001:db8::2".parse().unwrap()));
        let host4 = Cidr::parse("192.0.2.1").unwrap();
        assert!(host4.contains("192.0.2.1".parse().unwrap()));
        assert!(!host4.contains("192.0.2.2".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "::/129",
            "10.0.0.0/",
            "x",
            "10.0.0.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn operators_and_missing_keys() {
        let mut ctx = Context::new();
        ctx.insert("aws:SourceIp", "10.1.2.3");
        ctx.insert("aws:MultiFactorAuthAge", "300");
        ctx.insert("aws:CurrentTime", "2024-06-01T12:00:00Z");
        ctx.insert("aws:SecureTransport", "TRUE");
        ctx.insert_multi("aws:TagKeys", vec!["Env".into(), "Team".into()]);
        ctx.insert("aws:PrincipalArn", "arn:aws:iam::123456789012:role/Admin");
        ctx.insert("s3:x-amz-content-sha256", "aGVsbG8=");
        #[rustfmt::skip]
        let rows: &[(&str, &str, &[&str], bool)] = &[
            ("IpAddress", "aws:SourceIp", &["10.0.0.0/8"], true),
            ("NotIpAddress", "aws:SourceIp", &["10.0.0.0/8"], false),
            ("IpAddress", "aws:missing", &["10.0.0.0/8"], false),
            ("NotIpAddress", "aws:missing", &["10.0.0.0/8"], true),
            ("NumericLessThan", "aws:MultiFactorAuthAge", &["3600"], true),
            ("NumericGreaterThan", "aws:MultiFactorAuthAge", &["3600"], false),
            ("NumericGreaterThanEquals", "aws:MultiFactorAuthAge", &["300"], true),
            ("NumericNotEquals", "aws:MultiFactorAuthAge", &["300", "400"], false),
            ("DateGreaterThan", "aws:CurrentTime", &["2024-01-01T00:00:00Z"], true),
            ("DateLessThan", "aws:CurrentTime", &["1717243200"], false),
            ("DateLessThanEquals", "aws:CurrentTime", &["1717243200"], true),
            ("Bool", "aws:SecureTransport", &["true"], true),
            ("Bool", "aws:missing", &["false"], false),
            ("BoolIfExists", "aws:missing", &["false"], true),
            ("Null", "aws:missing", &["true"], true),
            ("Null", "aws:SourceIp", &["true"], false),
            ("Null", "aws:SourceIp", &["false"], true),
            // Several values are ORed, as for every operator.
            ("Null", "aws:SourceIp", &["true", "false"], true),
            ("Null", "aws:missing", &["true", "false"], true),
            ("Null", "aws:missing", &["false", "false"], false),
            ("ForAllValues:StringEquals", "aws:TagKeys", &["Env", "Team", "Cost"], true),
            ("ForAllValues:StringEquals", "aws:TagKeys", &["Env"], false),
            ("ForAllValues:StringEquals", "aws:missing", &["Env"], true),
            ("ForAnyValue:StringEquals", "aws:TagKeys", &["Team"], true),
            ("ForAnyValue:StringEquals", "aws:missing", &["Team"], false),
            ("ForAnyValue:StringNotEquals", "aws:TagKeys", &["Env"], true),
            ("ForAllValues:StringNotEquals", "aws:TagKeys", &["Env"], false),
            ("StringEqualsIgnoreCase", "AWS:TAGKEYS", &["env"], true),
            ("StringNotEqualsIgnoreCase", "aws:TagKeys", &["ENV"], false),
            ("ArnLike", "aws:PrincipalArn", &["arn:aws:iam::*:role/Adm*"], true),
            ("ArnEquals", "aws:PrincipalArn", &["arn:aws:iam::123456789012:role/Admin"], true),
            ("ArnNotLike", "aws:PrincipalArn", &["arn:aws:iam::*:role/Adm*"], false),
            ("ArnLike", "aws:PrincipalArn", &["arn:aws:iam::*:user/*"], false),
            ("BinaryEquals", "s3:x-amz-content-sha256", &["aGVsbG8="], true),
            ("StringLikeIfExists", "aws:missing", &["x*"], true),
            ("StringNotLike", "aws:missing", &["x*"], true),
        ];
        for (op, key, values, want) in rows {
            assert_eq!(
                cond(op, key, values).holds(&ctx),
                *want,
                "{op} {key} {values:?}"
            );
        }
    }

    proptest::proptest! {
        /// Any operator, any policy value, any request value: never a panic.
        #[test]
        fn never_panics(
            op in proptest::sample::select(vec![
                "StringLike", "StringEqualsIgnoreCase", "NumericLessThan", "DateGreaterThan",
                "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnLike",
                "ForAllValues:StringNotLike", "ForAnyValue:DateEqualsIfExists", "Null",
            ]),
            value in "[0-9a-f:./*?T+Z-]{0,40}|\\PC{0,20}",
            request in "[0-9a-f:./*?T+Z-]{0,40}|\\PC{0,20}",
        ) {
            if let Ok(c) = Condition::compile(op, "k", &[value], true) {
                let mut ctx = Context::new();
                ctx.insert("k", request);
                let _ = c.holds(&ctx);
            }
        }
    }

    #[test]
    fn bad_conditions() {
        let rows: &[(&str, &[&str])] = &[
            ("StringEqualz", &["x"]),
            ("IpAddress", &["10.0.0.0/40"]),
            ("DateEquals", &["tomorrow"]),
            ("NumericEquals", &["NaN"]),
            ("NumericEquals", &["inf"]),
            ("Bool", &["yes"]),
            ("ArnLike", &["not-an-arn"]),
            ("NullIfExists", &["true"]),
            ("ForAllValues:Null", &["true"]),
            ("BinaryEquals", &["!!"]),
            ("StringEquals", &[]),
            ("IfExists", &["x"]),
        ];
        for (op, values) in rows {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            assert!(
                Condition::compile(op, "k", &values, true).is_err(),
                "{op} {values:?}"
            );
        }
    }
}
