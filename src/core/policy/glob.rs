//! Wildcard templates: literal text, `*`, `?` and policy variables (`${key}`,
//! `${key, 'default'}`, and the escapes `${*}` `${?}` `${$}`).
//!
//! A template is parsed once; matching walks tokens and text without allocating. Variable
//! values are resolved up front into a small stack array and are always literal text (a `*`
//! in a user name is not a wildcard).
//!
//! Why segments: the classic two-pointer matcher backtracks to the last `*` and is O(n·m)
//! on inputs an attacker chooses (`*aaaa…b*` against `aaaa…`). Here the pattern is split at
//! `*` into segments that each match a fixed number of characters: the first is anchored at
//! the start, the last at the end, and each middle one goes to its leftmost occurrence, found
//! with a linear-time substring search when it is plain text. Only a middle segment holding
//! `?` or a variable is tried offset by offset; [`super::MAX_MATCH_LEN`] bounds that.

use super::{Context, MAX_MATCH_LEN, over_match_cap};

/// Most variables one template may hold; keeps resolution on the stack.
pub(crate) const MAX_VARIABLES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Lit(Box<str>),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
    /// A policy variable: lowercased key and optional default.
    Var {
        key: Box<str>,
        default: Option<Box<str>>,
    },
}

/// How a template's text is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    /// `*` and `?` are wildcards (otherwise literal).
    pub wildcards: bool,
    /// `${…}` is a policy variable (Version 2012-10-17).
    pub variables: bool,
    /// Compare case-insensitively (the pattern is lowercased at parse time).
    pub ignore_case: bool,
}

/// Which matcher a template needs; none backtracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcards: text must equal the concatenation.
    Literal,
    /// One `*`, at the end: text must start with the concatenation.
    TrailingStar,
    General,
}

#[derive(Debug, Clone)]
pub(crate) struct Template {
    tokens: Box<[Token]>,
    shape: Shape,
    /// `*`-separated segments, for [`Shape::General`] only.
    segments: Box<[Segment]>,
    ignore_case: bool,
    has_variables: bool,
}

impl Template {
    pub fn parse(text: &str, syntax: Syntax) -> Result<Template, String> {
        let mut tokens = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        let mut variables = 0;
        while let Some(c) = rest.chars().next() {
            if syntax.variables && rest.starts_with("${") {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("unterminated policy variable in {text:?}"))?;
                let body = &rest[2..end];
                rest = &rest[end + 1..];
                match body {
                    "*" | "?" | "$" => lit.push_str(body),
                    _ => {
                        variables += 1;
                        if variables > MAX_VARIABLES {
                            return Err(format!("more than {MAX_VARIABLES} policy variables"));
                        }
                        flush(&mut lit, &mut tokens, syntax.ignore_case);
                        tokens.push(parse_variable(body)?);
                    }
                }
                continue;
            }
            rest = &rest[c.len_utf8()..];
            match c {
                '*' if syntax.wildcards => {
                    flush(&mut lit, &mut tokens, syntax.ignore_case);
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' if syntax.wildcards => {
                    flush(&mut lit, &mut tokens, syntax.ignore_case);
                    tokens.push(Token::One);
                }
                _ => lit.push(c),
            }
        }
        flush(&mut lit, &mut tokens, syntax.ignore_case);
        let wildcards = tokens
            .iter()
            .filter(|t| matches!(t, Token::Star | Token::One))
            .count();
        let shape = match (wildcards, tokens.last()) {
            (0, _) => Shape::Literal,
            (1, Some(Token::Star)) => Shape::TrailingStar,
            _ => Shape::General,
        };
        let segments = if shape == Shape::General {
            segments_of(&tokens)
        } else {
            Box::default()
        };
        Ok(Template {
            tokens: tokens.into_boxed_slice(),
            shape,
            segments,
            ignore_case: syntax.ignore_case,
            has_variables: variables > 0,
        })
    }

    /// Does `text` match, with variables taken from `ctx`?
    pub fn matches(&self, text: &str, ctx: &Context) -> bool {
        // Fast paths for the common shapes: `x`, `x*`, `*`.
        let ascii = |s: &str| !self.ignore_case || (s.is_ascii() && text.is_ascii());
        match &*self.tokens {
            [] => return text.is_empty(),
            [Token::Star] => return true,
            [Token::Lit(s)] if ascii(s) => {
                return if self.ignore_case {
                    text.eq_ignore_ascii_case(s)
                } else {
                    text == &**s
                };
            }
            [Token::Lit(s), Token::Star] if ascii(s) => {
                return text.get(..s.len()).is_some_and(|head| {
                    if self.ignore_case {
                        head.eq_ignore_ascii_case(s)
                    } else {
                        head == &**s
                    }
                });
            }
            _ => {}
        }
        let Some(values) = self.resolve(ctx) else {
            return false;
        };
        let pieces = |tokens| Pieces {
            tokens,
            values: &values,
        };
        match self.shape {
            Shape::Literal => literal_match(&pieces(&self.tokens), text, self.ignore_case, false),
            Shape::TrailingStar => {
                let head = &self.tokens[..self.tokens.len() - 1];
                literal_match(&pieces(head), text, self.ignore_case, true)
            }
            Shape::General => segment_match(
                &self.segments,
                &pieces(&self.tokens),
                text,
                self.ignore_case,
            ),
        }
    }

    /// Variable values in token order; `None` when one is missing, multivalued or over-long
    /// (the template then matches nothing).
    fn resolve<'c>(&'c self, ctx: &'c Context) -> Option<[&'c str; MAX_VARIABLES]> {
        let mut values: [&str; MAX_VARIABLES] = [""; MAX_VARIABLES];
        if !self.has_variables {
            return Some(values);
        }
        let variables = self.tokens.iter().filter_map(|token| match token {
            Token::Var { key, default } => Some(ctx.variable(key).or(default.as_deref())),
            _ => None,
        });
        for (slot, value) in values.iter_mut().zip(variables) {
            *slot = value.filter(|v| !over_match_cap(v))?;
        }
        Some(values)
    }

    /// The previous backtracking matcher, kept as the equivalence oracle.
    #[cfg(test)]
    fn matches_oracle(&self, text: &str, ctx: &Context) -> bool {
        let Some(values) = self.resolve(ctx) else {
            return false;
        };
        let pieces = Pieces {
            tokens: &self.tokens,
            values: &values,
        };
        oracle::wildcard_match(&pieces, text, self.ignore_case)
    }
}

fn flush(lit: &mut String, tokens: &mut Vec<Token>, ignore_case: bool) {
    if !lit.is_empty() {
        let text = if ignore_case {
            lit.to_lowercase()
        } else {
            std::mem::take(lit)
        };
        lit.clear();
        tokens.push(Token::Lit(text.into_boxed_str()));
    }
}

fn parse_variable(body: &str) -> Result<Token, String> {
    let (key, default) = match body.split_once(',') {
        None => (body.trim(), None),
        Some((key, default)) => {
            let default = default.trim();
            let inner = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .ok_or_else(|| format!("default value in ${{{body}}} must be in single quotes"))?;
            (key.trim(), Some(inner.into()))
        }
    };
    if key.is_empty()
        || key
            .chars()
            .any(|c| c.is_whitespace() || c == '$' || c == '{')
    {
        return Err(format!("invalid policy variable ${{{body}}}"));
    }
    Ok(Token::Var {
        key: key.to_lowercase().into_boxed_str(),
        default,
    })
}

/// Tokens with variables resolved.
struct Pieces<'a> {
    tokens: &'a [Token],
    values: &'a [&'a str; MAX_VARIABLES],
}

fn chars_eq(a: char, b: char, ignore_case: bool) -> bool {
    a == b
        || (ignore_case
            && if a.is_ascii() && b.is_ascii() {
                a.eq_ignore_ascii_case(&b)
            } else {
                a.to_lowercase().eq(b.to_lowercase())
            })
}

/// `text` equals the tokens' concatenation (or, with `prefix`, starts with it).
fn literal_match(pieces: &Pieces, text: &str, ignore_case: bool, prefix: bool) -> bool {
    let mut rest = text;
    let mut variable = 0;
    for token in pieces.tokens {
        let part = match token {
            Token::Lit(s) => &**s,
            Token::Var { .. } => {
                variable += 1;
                pieces.values[variable - 1]
            }
            // Literal templates hold no wildcard tokens.
            Token::Star | Token::One => return false,
        };
        if ignore_case {
            let mut text_chars = rest.chars();
            for p in part.chars() {
                match text_chars.next() {
                    Some(t) if chars_eq(p, t, true) => {}
                    _ => return false,
                }
            }
            rest = text_chars.as_str();
        } else {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        }
    }
    prefix || rest.is_empty()
}

/// A run of tokens between two `*` (or an end of the pattern): it matches a fixed number of
/// characters, so `*`-separated segments can be placed without backtracking.
#[derive(Debug, Clone)]
struct Segment {
    /// Token range in the template.
    start: usize,
    end: usize,
    /// Index of the segment's first variable among the template's variables.
    first_variable: usize,
    /// The segment is one literal token (no `?`, no variable): searched with a linear-time
    /// substring search.
    literal: bool,
}

fn segments_of(tokens: &[Token]) -> Box<[Segment]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut variables = 0;
    let mut first_variable = 0;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Star => {
                out.push(segment(tokens, start, i, first_variable));
                start = i + 1;
                first_variable = variables;
            }
            Token::Var { .. } => variables += 1,
            Token::Lit(_) | Token::One => {}
        }
    }
    out.push(segment(tokens, start, tokens.len(), first_variable));
    out.into_boxed_slice()
}

fn segment(tokens: &[Token], start: usize, end: usize, first_variable: usize) -> Segment {
    Segment {
        start,
        end,
        first_variable,
        literal: matches!(&tokens[start..end], [Token::Lit(_)]),
    }
}

impl Segment {
    /// Each element with its text: a literal part, or `None` for `?`.
    fn parts<'a>(&self, pieces: &'a Pieces<'a>) -> impl Iterator<Item = Option<&'a str>> + 'a {
        let mut variable = self.first_variable;
        pieces.tokens[self.start..self.end]
            .iter()
            .map(move |token| match token {
                Token::Lit(s) => Some(&**s),
                Token::Var { .. } => {
                    variable += 1;
                    Some(pieces.values[variable - 1])
                }
                Token::One | Token::Star => None,
            })
    }

    /// Characters it matches (each pattern character matches exactly one text character).
    fn char_len(&self, pieces: &Pieces) -> usize {
        self.parts(pieces)
            .map(|p| p.map_or(1, |s| s.chars().count()))
            .sum()
    }

    /// Byte length of the match when `text` starts with this segment.
    fn match_prefix(&self, pieces: &Pieces, text: &str, ignore_case: bool) -> Option<usize> {
        let mut rest = text;
        for part in self.parts(pieces) {
            match part {
                None => {
                    let c = rest.chars().next()?;
                    rest = &rest[c.len_utf8()..];
                }
                Some(s) if !ignore_case => rest = rest.strip_prefix(s)?,
                Some(s) => {
                    let mut chars = rest.chars();
                    for p in s.chars() {
                        if !chars_eq(p, chars.next()?, true) {
                            return None;
                        }
                    }
                    rest = chars.as_str();
                }
            }
        }
        Some(text.len() - rest.len())
    }

    /// The end (byte offset in `text`) of the leftmost occurrence in `text`.
    fn find(&self, pieces: &Pieces, text: &str, ignore_case: bool) -> Option<usize> {
        if self.literal
            && let Some(Token::Lit(needle)) = pieces.tokens.get(self.start)
        {
            if !ignore_case {
                // std's `str::find` is the Two-Way algorithm: linear, no quadratic blow-up.
                return text.find(&**needle).map(|at| at + needle.len());
            }
            if needle.is_ascii() && text.is_ascii() && text.len() <= MAX_MATCH_LEN {
                // The pattern is lowercased at parse time; lower the text on the stack.
                let mut buffer = [0u8; MAX_MATCH_LEN];
                let lowered = &mut buffer[..text.len()];
                lowered.copy_from_slice(text.as_bytes());
                lowered.make_ascii_lowercase();
                if let Ok(lowered) = std::str::from_utf8(lowered) {
                    return lowered.find(&**needle).map(|at| at + needle.len());
                }
            }
        }
        // `?`, variables or non-ASCII case folding: try each start (O(n·k) on this segment).
        text.char_indices()
            .map(|(at, _)| at)
            .chain(std::iter::once(text.len()))
            .find_map(|at| {
                self.match_prefix(pieces, &text[at..], ignore_case)
                    .map(|len| at + len)
            })
    }
}

/// Wildcard matching without backtracking: the first segment is anchored at the start, the
/// last at the end, and each middle segment is placed at its leftmost occurrence (always
/// optimal, since a segment matches a fixed number of characters). With literal segments the
/// work is O(n + m) per segment.
fn segment_match(segments: &[Segment], pieces: &Pieces, text: &str, ignore_case: bool) -> bool {
    let [first, middle @ .., last] = segments else {
        // One segment: no `*` at all.
        return segments
            .first()
            .is_some_and(|only| only.match_prefix(pieces, text, ignore_case) == Some(text.len()));
    };
    let Some(mut at) = first.match_prefix(pieces, text, ignore_case) else {
        return false;
    };
    let tail_chars = last.char_len(pieces);
    let tail_start = if tail_chars == 0 {
        text.len()
    } else {
        match text[at..].char_indices().rev().nth(tail_chars - 1) {
            Some((offset, _)) => at + offset,
            None => return false,
        }
    };
    if last.match_prefix(pieces, &text[tail_start..], ignore_case) != Some(text.len() - tail_start)
    {
        return false;
    }
    for segment in middle {
        match segment.find(pieces, &text[at..tail_start], ignore_case) {
            Some(end) => at += end,
            None => return false,
        }
    }
    true
}

/// Splits at `:` outside `${…}` (a variable such as `${aws:username}` holds a colon).
pub(crate) fn split_arn(text: &str) -> Vec<&str> {
    let mut parts = Vec::with_capacity(6);
    let mut start = 0;
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' if i > 0 && bytes[i - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b':' if depth == 0 && parts.len() < 5 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The previous matcher (greedy two pointers, one backtrack point: O(n·m)), kept as the
/// property tests' oracle.
#[cfg(test)]
mod oracle {
    use super::{Pieces, Token, chars_eq};

    #[derive(Clone, Copy)]
    struct Cursor {
        token: usize,
        offset: usize,
        variable: usize,
    }

    enum Elem {
        Star,
        One,
        Char(char),
    }

    impl Pieces<'_> {
        fn next(&self, mut at: Cursor) -> Option<(Elem, Cursor)> {
            loop {
                let token = self.tokens.get(at.token)?;
                let (text, is_var) = match token {
                    Token::Star | Token::One => {
                        let elem = if matches!(token, Token::Star) {
                            Elem::Star
                        } else {
                            Elem::One
                        };
                        at.token += 1;
                        at.offset = 0;
                        return Some((elem, at));
                    }
                    Token::Lit(s) => (&**s, false),
                    Token::Var { .. } => (self.values[at.variable], true),
                };
                if let Some(c) = text[at.offset..].chars().next() {
                    at.offset += c.len_utf8();
                    return Some((Elem::Char(c), at));
                }
                at.token += 1;
                at.offset = 0;
                if is_var {
                    at.variable += 1;
                }
            }
        }
    }

    /// Classic wildcard matching with one backtrack point (the last `*`): O(n·m) worst case.
    pub(super) fn wildcard_match(pieces: &Pieces, text: &str, ignore_case: bool) -> bool {
        let start = Cursor {
            token: 0,
            offset: 0,
            variable: 0,
        };
        let mut p = start;
        let mut t = 0;
        let mut backtrack: Option<(Cursor, usize)> = None;
        loop {
            let here = text[t..].chars().next();
            match (pieces.next(p), here) {
                (Some((Elem::Star, next)), _) => {
                    backtrack = Some((next, t));
                    p = next;
                    continue;
                }
                (Some((Elem::One, next)), Some(c)) => {
                    p = next;
                    t += c.len_utf8();
                    continue;
                }
                (Some((Elem::Char(pc), next)), Some(c)) if chars_eq(pc, c, ignore_case) => {
                    p = next;
                    t += c.len_utf8();
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            match backtrack {
                Some((after_star, star_t)) => match text[star_t..].chars().next() {
                    Some(c) => {
                        let t2 = star_t + c.len_utf8();
                        backtrack = Some((after_star, t2));
                        p = after_star;
                        t = t2;
                    }
                    None => return false,
                },
                None => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIKE: Syntax = Syntax {
        wildcards: true,
        variables: true,
        ignore_case: false,
    };

    fn m(pattern: &str, text: &str) -> bool {
        Template::parse(pattern, LIKE)
            .unwrap()
            .matches(text, &Context::new())
    }

    #[test]
    fn wildcards() {
        let rows = [
            ("*", "", true),
            ("*", "anything", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("", "", true),
            ("", "x", false),
            ("${*}", "*", true),
            ("${*}", "x", false),
            ("a${?}", "a?", true),
            ("${$}{x}", "${x}", true),
            ("*.txt", "a.txt", true),
            ("user/*/x", "user/a/b/x", true),
        ];
        for (p, t, want) in rows {
            assert_eq!(m(p, t), want, "{p:?} vs {t:?}");
        }
    }

    #[test]
    fn variables_and_defaults() {
        let mut ctx = Context::new();
        ctx.insert("aws:username", "Bob*");
        ctx.insert_multi("aws:TagKeys", vec!["a".into(), "b".into()]);
        let t = |p: &str| Template::parse(p, LIKE).unwrap();
        assert!(t("home/${aws:username}/*").matches("home/Bob*/x", &ctx));
        // Variable values are literal: the `*` in the name is not a wildcard.
        assert!(!t("home/${aws:username}").matches("home/Bobby", &ctx));
        assert!(t("${AWS:UserName}").matches("Bob*", &ctx));
        assert!(!t("${aws:missing}").matches("", &ctx));
        assert!(t("${aws:missing, 'dflt'}").matches("dflt", &ctx));
        assert!(t("${aws:missing,''}").matches("", &ctx));
        // Multivalued keys cannot be variables.
        assert!(!t("${aws:TagKeys}").matches("a", &ctx));
    }

    #[test]
    fn bad_templates() {
        for p in ["${aws:username", "${}", "${a b}", "${k, dflt}"] {
            assert!(Template::parse(p, LIKE).is_err(), "{p}");
        }
        let nine = "${a}".repeat(9);
        assert!(Template::parse(&nine, LIKE).is_err());
    }

    #[test]
    fn ignore_case() {
        let syntax = Syntax {
            wildcards: true,
            variables: false,
            ignore_case: true,
        };
        let t = Template::parse("S3:Get*", syntax).unwrap();
        assert!(t.matches("s3:GETOBJECT", &Context::new()));
        assert!(!t.matches("s3:PutObject", &Context::new()));
    }

    #[test]
    fn adversarial_pattern_is_linear() {
        // `*aaaa…b*` against `aaaa…`: the old matcher retried the segment at every offset.
        let pattern = format!("*{}b*", "a".repeat(1000));
        let text = "a".repeat(MAX_MATCH_LEN);
        let tpl = Template::parse(&pattern, LIKE).unwrap();
        assert!(!tpl.matches(&text, &Context::new()));
        assert!(tpl.matches(&format!("{text}b"), &Context::new()));
        let folded = Template::parse(
            &pattern.to_uppercase(),
            Syntax {
                ignore_case: true,
                ..LIKE
            },
        )
        .unwrap();
        assert!(folded.matches(&format!("x{}By", "A".repeat(1000)), &Context::new()));
        assert!(!folded.matches(&text, &Context::new()));
    }

    #[test]
    fn over_long_variable_matches_nothing() {
        let mut ctx = Context::new();
        ctx.insert("aws:username", "u".repeat(MAX_MATCH_LEN + 1));
        let t = Template::parse("*${aws:username}*", LIKE).unwrap();
        assert!(!t.matches(&"u".repeat(MAX_MATCH_LEN + 3), &ctx));
        ctx.insert("aws:username", "u".repeat(MAX_MATCH_LEN));
        assert!(t.matches(&"u".repeat(MAX_MATCH_LEN + 3), &ctx));
    }

    #[test]
    fn arn_split_respects_variables() {
        assert_eq!(
            split_arn("arn:aws:s3:::b/${aws:username}/*"),
            ["arn", "aws", "s3", "", "", "b/${aws:username}/*"]
        );
        assert_eq!(split_arn("a:b:c:d:e:f:g:h")[5], "f:g:h");
    }

    /// Every pattern over `a b * ?` up to 5 elements against every text over `a b` up to 6
    /// characters: the segment matcher and the old backtracking matcher agree.
    #[test]
    fn agrees_with_oracle_exhaustively() {
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut layer = vec![String::new()];
            for _ in 0..max {
                layer = layer
                    .iter()
                    .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                    .collect();
                out.extend(layer.iter().cloned());
            }
            out
        }
        let texts = all(&['a', 'b'], 6);
        let ctx = Context::new();
        for p in all(&['a', 'b', '*', '?'], 5) {
            let tpl = Template::parse(&p, LIKE).unwrap();
            for t in &texts {
                assert_eq!(
                    tpl.matches(t, &ctx),
                    tpl.matches_oracle(t, &ctx),
                    "{p:?} vs {t:?}"
                );
            }
        }
    }

    /// Reference matcher: plain recursion over chars.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    proptest! {
        #[test]
        fn matches_reference(p in "[ab*?]{0,8}", t in "[ab]{0,10}") {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(m(&p, &t), reference(&pc, &tc));
        }

        #[test]
        fn literal_matches_itself(t in "[a-z/:.-]{0,20}") {
            prop_assert!(m(&t, &t));
        }

        #[test]
        fn star_suffix_matches_extensions(t in "[a-z]{0,10}", ext in "[a-z*?]{0,10}") {
            let p = format!("{t}*");
            let text = format!("{t}{ext}");
            prop_assert!(m(&p, &text));
        }

        /// The segment matcher agrees with the old backtracking matcher: wildcards,
        /// variables (with values holding `*`/`?`), case folding and multi-byte text.
        #[test]
        fn agrees_with_backtracking_oracle(
            p in "([ab*?é]|\\$\\{v\\}|\\$\\{\\*\\}|A){0,10}",
            t in "[abAé*?]{0,14}",
            v in "[ab*?]{0,3}",
            ignore_case: bool,
        ) {
            let syntax = Syntax { wildcards: true, variables: true, ignore_case };
            let tpl = Template::parse(&p, syntax).unwrap();
            let mut ctx = Context::new();
            ctx.insert("v", v);
            prop_assert_eq!(tpl.matches(&t, &ctx), tpl.matches_oracle(&t, &ctx), "{:?} vs {:?}", p, t);
        }

        /// Longer texts built from the pattern's own pieces, so matches are frequent.
        #[test]
        fn agrees_with_oracle_on_near_matches(
            pieces in proptest::collection::vec("(ab|a|b|\\*|\\?|ba)", 0..8),
            fill in proptest::collection::vec("[ab]{0,6}", 0..8),
        ) {
            let p: String = pieces.concat();
            let t: String = pieces
                .iter()
                .zip(fill.iter().chain(std::iter::repeat(&String::new())))
                .map(|(piece, f)| if piece == "*" { f.clone() } else { piece.replace('?', "b") })
                .collect();
            let tpl = Template::parse(&p, LIKE).unwrap();
            let ctx = Context::new();
            prop_assert_eq!(tpl.matches(&t, &ctx), tpl.matches_oracle(&t, &ctx), "{:?} vs {:?}", p, t);
        }

        #[test]
        fn never_panics(p in "\\PC{0,12}", t in "\\PC{0,12}") {
            if let Ok(tpl) = Template::parse(&p, LIKE) {
                let _ = tpl.matches(&t, &Context::new());
            }
        }
    }
}
