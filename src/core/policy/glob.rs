//! Wildcard templates: literal text, `*`, `?` and policy variables (`${key}`,
//! `${key, 'default'}`, and the escapes `${*}` `${?}` `${$}`).
//!
//! A template is parsed once; matching walks tokens and text without allocating. Variable
//! values are resolved up front into a small stack array and are always literal text (a `*`
//! in a user name is not a wildcard).

use super::Context;

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

/// Which matcher a template needs; the first two never backtrack.
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
        Ok(Template {
            tokens: tokens.into_boxed_slice(),
            shape,
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
        let mut values: [&str; MAX_VARIABLES] = [""; MAX_VARIABLES];
        let mut n = 0;
        let tokens = if self.has_variables {
            &*self.tokens
        } else {
            &[]
        };
        for token in tokens {
            if let Token::Var { key, default } = token {
                match ctx.variable(key).or(default.as_deref()) {
                    Some(v) => values[n] = v,
                    None => return false,
                }
                n += 1;
            }
        }
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
            Shape::General => wildcard_match(&pieces(&self.tokens), text, self.ignore_case),
        }
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

/// Tokens with variables resolved, read as a stream of pattern elements.
struct Pieces<'a> {
    tokens: &'a [Token],
    values: &'a [&'a str; MAX_VARIABLES],
}

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

/// Classic wildcard matching with one backtrack point (the last `*`): O(n·m) worst case.
fn wildcard_match(pieces: &Pieces, text: &str, ignore_case: bool) -> bool {
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
    fn arn_split_respects_variables() {
        assert_eq!(
            split_arn("arn:aws:s3:::b/${aws:username}/*"),
            ["arn", "aws", "s3", "", "", "b/${aws:username}/*"]
        );
        assert_eq!(split_arn("a:b:c:d:e:f:g:h")[5], "f:g:h");
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

        #[test]
        fn never_panics(p in "\\PC{0,12}", t in "\\PC{0,12}") {
            if let Ok(tpl) = Template::parse(&p, LIKE) {
                let _ = tpl.matches(&t, &Context::new());
            }
        }
    }
}
