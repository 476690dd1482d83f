//! The fuzzing loop shared by the byte-input targets: corpus replay, a seeded
//! mutator, outcome counting, saving new and failing inputs.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The default seed: runs repeat unless `RISKMAP_FUZZ_SEED` says otherwise.
pub const DEFAULT_SEED: u64 = 0x7269_736b_6d61_7031;
/// At most this many new inputs are saved into a corpus per run (signatures are
/// coarse, but a long run still finds hundreds).
pub const MAX_SAVED: usize = 25;
/// Mutated inputs are cut to this length.
pub const MAX_INPUT: usize = 64 * 1024;

pub fn seed() -> u64 {
    std::env::var("RISKMAP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// The seeded generator of one target (each target gets its own stream).
pub fn rng(target: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed() ^ fnv(target.as_bytes()))
}

/// New cases for a target: `RISKMAP_FUZZ_CASES`, else the target's default.
pub fn cases(default: usize) -> usize {
    std::env::var("RISKMAP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

pub fn saving() -> bool {
    std::env::var("RISKMAP_FUZZ_SAVE").is_ok_and(|v| v == "1")
}

pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

/// Every file of the target's corpus, by name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {} is empty", dir.display());
    out
}

/// FNV-1a, for file names and per-target seeds.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A message with its variable parts (numbers, quoted text) blanked, so that one kind
/// of outcome has one signature.
pub fn normalise(msg: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut last_digit = false;
    for c in msg.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
            continue;
        }
        if quoted {
            continue;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                out.push('#');
            }
            last_digit = true;
            continue;
        }
        last_digit = false;
        out.push(c);
        if out.len() > 72 {
            break;
        }
    }
    out
}

/// What one case did: accepted (features read, a tile served...) or refused, and a
/// signature of the outcome (used to notice new behaviour).
pub struct Verdict {
    pub accepted: bool,
    pub signature: String,
}

impl Verdict {
    pub fn accepted(signature: impl Into<String>) -> Self {
        Verdict {
            accepted: true,
            signature: signature.into(),
        }
    }
    pub fn refused(signature: impl Into<String>) -> Self {
        Verdict {
            accepted: false,
            signature: signature.into(),
        }
    }
}

/// Counts of one run.
#[derive(Debug, Default)]
pub struct Report {
    pub replayed: usize,
    pub replay_accepted: usize,
    pub cases: usize,
    pub accepted: usize,
    pub refused: usize,
    pub signatures: usize,
    pub saved: usize,
}

/// Shows an input in a failure message: escaped, and cut when long.
pub fn preview(input: &[u8]) -> String {
    let shown = &input[..input.len().min(600)];
    let mut s = String::from_utf8_lossy(shown).escape_debug().to_string();
    if input.len() > shown.len() {
        s.push_str(&format!("… ({} bytes)", input.len()));
    }
    s
}

/// Writes a failing input where it can be found again; panics naming it.
pub fn fail(target: &str, origin: &str, input: &[u8], why: &str) -> ! {
    let name = format!("crash-{:016x}", fnv(input));
    let dir = std::env::temp_dir()
        .join("riskmap-fuzz-failures")
        .join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(&name);
    let _ = std::fs::write(&path, input);
    let mut saved = format!("saved to {}", path.display());
    if saving() {
        let p = corpus_dir(target).join(&name);
        if std::fs::write(&p, input).is_ok() {
            saved.push_str(&format!(" and {}", p.display()));
        }
    }
    panic!(
        "fuzz target {target}, {origin} (seed {}): {why}\ninput: {}\n{saved}",
        seed(),
        preview(input)
    );
}

/// Runs `check` on one input, turning a panic into a failure that names the input.
pub fn check_one(
    target: &str,
    origin: &str,
    input: &[u8],
    check: &mut dyn FnMut(&[u8]) -> Verdict,
) -> Verdict {
    match catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            fail(target, origin, input, &msg)
        }
    }
}

/// Byte-level mutations of corpus entries, with a dictionary of tokens the target's
/// parser gives meaning to.
pub struct Mutator {
    pub rng: ChaCha8Rng,
    tokens: Vec<Vec<u8>>,
}

/// Bytes that often matter to a parser.
const INTERESTING_BYTES: &[u8] = &[
    0, 0x1e, b'\n', b'\r', b'\t', b' ', b'"', b'\\', b'{', b'}', b'[', b']', b',', b':', b'-',
    b'.', b'e', b'%', b'/', b'&', b'=', b'+', b'0', b'9', 0x7f, 0x80, 0xc0, 0xef, 0xff,
];

impl Mutator {
    pub fn new(rng: ChaCha8Rng, tokens: &[&[u8]]) -> Self {
        Mutator {
            rng,
            tokens: tokens.iter().map(|t| t.to_vec()).collect(),
        }
    }

    fn token(&mut self) -> Vec<u8> {
        if self.tokens.is_empty() {
            return vec![INTERESTING_BYTES[self.rng.random_range(0..INTERESTING_BYTES.len())]];
        }
        self.tokens[self.rng.random_range(0..self.tokens.len())].clone()
    }

    /// A range inside `0..len` (non-empty when `len > 0`), short more often than long.
    fn range(&mut self, len: usize) -> (usize, usize) {
        let start = self.rng.random_range(0..len.max(1));
        let max = (len - start.min(len)).max(1);
        let n = if self.rng.random_bool(0.8) {
            self.rng.random_range(1..=max.min(16))
        } else {
            self.rng.random_range(1..=max)
        };
        (start, (start + n).min(len))
    }

    /// One new input from the pool: a random entry with one to four mutations.
    pub fn mutate(&mut self, pool: &[Vec<u8>]) -> Vec<u8> {
        let mut b = pool[self.rng.random_range(0..pool.len())].clone();
        let rounds = 1 + (self.rng.random_range(0..16u32)).trailing_zeros().min(3);
        for _ in 0..rounds {
            let len = b.len();
            match self.rng.random_range(0..12u32) {
                0 if len > 0 => {
                    let i = self.rng.random_range(0..len);
                    b[i] ^= 1 << self.rng.random_range(0..8);
                }
                1 if len > 0 => {
                    let i = self.rng.random_range(0..len);
                    b[i] = INTERESTING_BYTES[self.rng.random_range(0..INTERESTING_BYTES.len())];
                }
                2 if len > 0 => {
                    let (s, e) = self.range(len);
                    b.drain(s..e);
                }
                3 if len > 0 => {
                    let (s, e) = self.range(len);
                    let chunk = b[s..e].to_vec();
                    let at = self.rng.random_range(0..=len);
                    b.splice(at..at, chunk);
                }
                4 => {
                    let other = &pool[self.rng.random_range(0..pool.len())];
                    let a = self.rng.random_range(0..=len);
                    let o = self.rng.random_range(0..=other.len());
                    b.truncate(a);
                    b.extend_from_slice(&other[o..]);
                }
                5 if len > 0 => {
                    let at = self.rng.random_range(0..len);
                    b.truncate(at);
                }
                6 | 7 => {
                    let t = self.token();
                    let at = self.rng.random_range(0..=len);
                    b.splice(at..at, t);
                }
                8 if len > 0 => {
                    // Replace a run of number-like bytes (or a short range) with a token.
                    let mut s = self.rng.random_range(0..len);
                    while s > 0 && is_numberish(b[s - 1]) {
                        s -= 1;
                    }
                    let mut e = s;
                    while e < len && is_numberish(b[e]) {
                        e += 1;
                    }
                    if e == s {
                        e = (s + 1).min(len);
                    }
                    let t = self.token();
                    b.splice(s..e, t);
                }
                9 => {
                    // A token many times over: deep nesting, long runs, repeated members.
                    let t = self.token();
                    let k = if self.rng.random_bool(0.2) {
                        self.rng.random_range(64..4096)
                    } else {
                        self.rng.random_range(2..64)
                    };
                    let at = self.rng.random_range(0..=len);
                    let run: Vec<u8> = t.iter().copied().cycle().take(t.len() * k).collect();
                    b.splice(at..at, run);
                }
                10 if len > 1 => {
                    // Swap two ranges' contents (reorders members, segments).
                    let (s1, e1) = self.range(len / 2);
                    let (s2, e2) = self.range(len - len / 2);
                    let (s2, e2) = (s2 + len / 2, e2 + len / 2);
                    let first = b[s1..e1].to_vec();
                    let second = b[s2..e2].to_vec();
                    b.splice(s2..e2, first);
                    b.splice(s1..e1, second);
                }
                _ => {
                    let at = self.rng.random_range(0..=len);
                    let byte = self.rng.random_range(0x20..0x7f_u8);
                    b.insert(at, byte);
                }
            }
        }
        b.truncate(MAX_INPUT);
        b
    }
}

fn is_numberish(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')
}

/// The loop: replays the corpus, then runs `cases(default_cases)` new inputs (from
/// `generate` when it returns one, else mutations of the pool), checking each. New
/// outcome signatures add their input to the pool (and to the corpus when saving).
/// Fails if the corpus or the new cases never reach both the accepting and the
/// refusing path.
pub fn run(
    target: &str,
    default_cases: usize,
    tokens: &[&[u8]],
    generate: &mut dyn FnMut(&mut ChaCha8Rng) -> Option<Vec<u8>>,
    check: &mut dyn FnMut(&[u8]) -> Verdict,
) -> Report {
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let mut replay_refused = 0;
    for (name, bytes) in corpus(target) {
        let v = check_one(target, &format!("corpus file {name}"), &bytes, check);
        report.replayed += 1;
        if v.accepted {
            report.replay_accepted += 1;
        } else {
            replay_refused += 1;
        }
        seen.insert(v.signature);
        pool.push(bytes);
    }
    let corpus_len = pool.len();
    let mut m = Mutator::new(rng(target), tokens);
    let n = cases(default_cases);
    for i in 0..n {
        let input = match generate(&mut m.rng) {
            Some(g) => g,
            None => m.mutate(&pool),
        };
        let v = check_one(target, &format!("case {i}"), &input, check);
        report.cases += 1;
        if v.accepted {
            report.accepted += 1;
        } else {
            report.refused += 1;
        }
        if seen.insert(v.signature) {
            if saving() && report.saved < MAX_SAVED {
                let p = corpus_dir(target).join(format!("found-{:016x}", fnv(&input)));
                if std::fs::write(p, &input).is_ok() {
                    report.saved += 1;
                }
            }
            if pool.len() < corpus_len + 1024 {
                pool.push(input);
            }
        }
    }
    report.signatures = seen.len();
    eprintln!(
        "fuzz {target}: {report:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.replay_accepted > 0 && replay_refused > 0,
        "{target}: the corpus must reach both paths: {report:?}"
    );
    if n >= 100 {
        assert!(
            report.accepted > 0 && report.refused > 0,
            "{target}: the new cases must reach both paths: {report:?}"
        );
    }
    report
}

#[test]
fn mutations_change_inputs_and_are_repeatable() {
    let pool = vec![b"{\"a\":[1,2,3]}".to_vec(), b"x=1&y=2".to_vec()];
    let tokens: &[&[u8]] = &[b"1e400", b"["];
    let mut a = Mutator::new(ChaCha8Rng::seed_from_u64(1), tokens);
    let mut b = Mutator::new(ChaCha8Rng::seed_from_u64(1), tokens);
    let mut changed = 0;
    for _ in 0..500 {
        let (x, y) = (a.mutate(&pool), b.mutate(&pool));
        assert_eq!(x, y, "same seed, same inputs");
        assert!(x.len() <= MAX_INPUT);
        if !pool.contains(&x) {
            changed += 1;
        }
    }
    assert!(
        changed > 400,
        "{changed} of 500 mutations changed the input"
    );
    assert_eq!(
        normalise(r#"feature 12 (id "A7"): field 'x[3]'"#),
        "feature # (id \"…\"): field 'x[#]'"
    );
}
