//! CQL2 `LIKE` patterns, compiled once and matched without allocating.
//!
//! CQL2 (OGC 21-065r2, §7.6): `%` matches any run of characters (none included), `_`
//! exactly one character, and `\` escapes the next character (`\%`, `\_`, `\\`). The
//! match is case- and accent-sensitive unless wrapped in `CASEI`/`ACCENTI` (see
//! [`Fold`]). Characters are Unicode scalar values, so `_` matches one `桥`.
//!
//! Written by hand rather than with a regex crate: a pattern is a handful of literal
//! pieces between `%`s, and matching them greedily left to right (each middle piece at
//! its leftmost occurrence, the last one at the end) is exact for this pattern language
//! and linear for patterns without `_`, where a piece is found with `str::find`. The
//! `like` crate cql2 uses returns the same answers but re-parses the pattern per call.

use std::borrow::Cow;

/// What `CASEI` and `ACCENTI` fold away before comparing text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fold {
    /// `CASEI`: Unicode lower case (`str::to_lowercase`).
    pub case: bool,
    /// `ACCENTI`: combining marks removed after canonical decomposition (the
    /// `unaccent` crate, as PostgreSQL's `unaccent` extension does).
    pub accent: bool,
}

impl Fold {
    pub const NONE: Fold = Fold {
        case: false,
        accent: false,
    };

    pub fn is_none(self) -> bool {
        self == Fold::NONE
    }

    /// The text with what this fold ignores removed (borrowed when nothing is folded).
    pub fn apply(self, s: &str) -> Cow<'_, str> {
        let mut out = Cow::Borrowed(s);
        if self.accent {
            out = Cow::Owned(unaccent::unaccent(&*out));
        }
        if self.case {
            out = Cow::Owned(out.to_lowercase());
        }
        out
    }
}

/// One element of a piece: a literal character or `_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Atom {
    Char(char),
    AnyOne,
}

/// A run of atoms between two `%`s.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    atoms: Vec<Atom>,
    /// The piece as text when it holds no `_` (found with `str::find`).
    literal: Option<String>,
}

impl Piece {
    fn new(atoms: Vec<Atom>) -> Piece {
        let literal = atoms
            .iter()
            .map(|a| match a {
                Atom::Char(c) => Some(*c),
                Atom::AnyOne => None,
            })
            .collect::<Option<String>>();
        Piece { atoms, literal }
    }

    /// Matches the piece at byte `at` of `s`; the byte just after it on success.
    fn match_at(&self, s: &str, at: usize) -> Option<usize> {
        if let Some(lit) = &self.literal {
            return s[at..].starts_with(lit.as_str()).then(|| at + lit.len());
        }
        let mut chars = s[at..].char_indices();
        let mut end = at;
        for atom in &self.atoms {
            let (i, c) = chars.next()?;
            if let Atom::Char(want) = atom {
                if *want != c {
                    return None;
                }
            }
            end = at + i + c.len_utf8();
        }
        Some(end)
    }

    /// The leftmost match starting in `s[from..]` and ending by `limit`: (start, end).
    fn find(&self, s: &str, from: usize, limit: usize) -> Option<(usize, usize)> {
        if let Some(lit) = &self.literal {
            let start = from + s[from..limit].find(lit.as_str())?;
            return Some((start, start + lit.len()));
        }
        let window = &s[..limit];
        let mut start = from;
        loop {
            if let Some(end) = self.match_at(window, start) {
                return Some((start, end));
            }
            let c = window[start..].chars().next()?;
            start += c.len_utf8();
        }
    }
}

/// A compiled `LIKE` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LikePattern {
    /// The pattern as written (after folding, when the pattern side was folded).
    source: String,
    /// Pieces split at each unescaped `%`: the first must match at the start, the last
    /// at the end; a pattern without `%` is one piece matching the whole text.
    pieces: Vec<Piece>,
}

/// Why a pattern was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LikePatternError(pub String);

impl LikePattern {
    /// Compiles `pattern`; characters are folded with `fold` (escapes are read first,
    /// so `\%` stays a literal `%`).
    pub fn new(pattern: &str, fold: Fold) -> Result<LikePattern, LikePatternError> {
        let mut pieces = Vec::new();
        let mut atoms = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => pieces.push(Piece::new(std::mem::take(&mut atoms))),
                '_' => atoms.push(Atom::AnyOne),
                '\\' => match chars.next() {
                    Some(e) => atoms.extend(fold_chars(e, fold).map(Atom::Char)),
                    None => {
                        return Err(LikePatternError(format!(
                            "LIKE pattern '{pattern}' ends with the escape character \\ (write \\\\ for a backslash)"
                        )));
                    }
                },
                c => atoms.extend(fold_chars(c, fold).map(Atom::Char)),
            }
        }
        pieces.push(Piece::new(atoms));
        Ok(LikePattern {
            source: pattern.to_string(),
            pieces,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `s` matches.
    pub fn matches(&self, s: &str) -> bool {
        let n = self.pieces.len();
        let first = &self.pieces[0];
        if n == 1 {
            return first.match_at(s, 0) == Some(s.len());
        }
        let Some(mut pos) = first.match_at(s, 0) else {
            return false;
        };
        // The last piece is anchored at the end: find where its characters start.
        let last = &self.pieces[n - 1];
        let need = last.atoms.len();
        let Some(tail) = start_of_last_chars(&s[pos..], need).map(|t| pos + t) else {
            return false;
        };
        if last.match_at(s, tail) != Some(s.len()) {
            return false;
        }
        for piece in &self.pieces[1..n - 1] {
            if piece.atoms.is_empty() {
                continue;
            }
            match piece.find(s, pos, tail) {
                Some((_, end)) => pos = end,
                None => return false,
            }
        }
        true
    }
}

/// The characters `c` folds to (one, except where lower case or decomposition
/// lengthens it).
fn fold_chars(c: char, fold: Fold) -> impl Iterator<Item = char> {
    let mut buf = [0u8; 4];
    let s: &str = c.encode_utf8(&mut buf);
    fold.apply(s)
        .into_owned()
        .chars()
        .collect::<Vec<_>>()
        .into_iter()
}

/// The byte offset in `s` where its last `n` characters start.
fn start_of_last_chars(s: &str, n: usize) -> Option<usize> {
    if n == 0 {
        return Some(s.len());
    }
    s.char_indices().rev().nth(n - 1).map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent matcher: dynamic programming over characters.
    fn dp_like(pattern: &[Option<Option<char>>], s: &[char]) -> bool {
        // pattern: None = %, Some(None) = _, Some(Some(c)) = c
        let (m, n) = (pattern.len(), s.len());
        let mut dp = vec![vec![false; n + 1]; m + 1];
        dp[0][0] = true;
        for i in 1..=m {
            for j in 0..=n {
                dp[i][j] = match pattern[i - 1] {
                    None => dp[i - 1][j] || (j > 0 && dp[i][j - 1]),
                    Some(None) => j > 0 && dp[i - 1][j - 1],
                    Some(Some(c)) => j > 0 && s[j - 1] == c && dp[i - 1][j - 1],
                };
            }
        }
        dp[m][n]
    }

    fn render(pattern: &[Option<Option<char>>]) -> String {
        let mut out = String::new();
        for p in pattern {
            match p {
                None => out.push('%'),
                Some(None) => out.push('_'),
                Some(Some(c)) => {
                    if matches!(c, '%' | '_' | '\\') {
                        out.push('\\');
                    }
                    out.push(*c);
                }
            }
        }
        out
    }

    fn alphabet() -> impl Strategy<Value = char> {
        prop::sample::select(vec!['a', 'b', '桥', '%', '_', '\\'])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn greedy_matching_agrees_with_dynamic_programming(
            pattern in prop::collection::vec(
                prop_oneof![
                    1 => Just(None),
                    1 => Just(Some(None)),
                    4 => alphabet().prop_map(|c| Some(Some(c))),
                ],
                0..8,
            ),
            s in prop::collection::vec(alphabet(), 0..10),
        ) {
            let compiled = LikePattern::new(&render(&pattern), Fold::NONE).expect("valid pattern");
            let text: String = s.iter().collect();
            prop_assert_eq!(compiled.matches(&text), dp_like(&pattern, &s), "{} against {:?}", render(&pattern), text);
        }
    }

    #[test]
    fn escapes_wildcards_and_folding() {
        let p = |s: &str| LikePattern::new(s, Fold::NONE).expect("valid");
        assert!(p("a\\%b").matches("a%b"));
        assert!(!p("a\\%b").matches("axb"));
        assert!(p("a\\_").matches("a_"));
        assert!(!p("a\\_").matches("ab"));
        assert!(p("\\\\").matches("\\"));
        assert!(p("桥_").matches("桥梁"));
        assert!(!p("A%").matches("abc"), "LIKE is case-sensitive");
        let casei = Fold {
            case: true,
            accent: false,
        };
        let folded = LikePattern::new("ÉCOLE%", casei).expect("valid");
        assert!(folded.matches(&casei.apply("école primaire")));
        let both = Fold {
            case: true,
            accent: true,
        };
        assert!(
            LikePattern::new("ecole%", both)
                .expect("valid")
                .matches(&both.apply("École"))
        );
        let e = LikePattern::new("ab\\", Fold::NONE).expect_err("dangling escape");
        assert!(e.0.contains("escape"), "{e:?}");
    }
}
