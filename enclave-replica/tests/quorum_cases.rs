//! Table-driven test of the quorum arithmetic (DESIGN §3, RR §III-D eqs.
//! 12–14) from `tests/quorum_cases.txt`.

use enclave_replica::core::{ConfigError, Mode, Quorums};

fn field<'a>(parts: &'a [&'a str], name: &str) -> Option<&'a str> {
    parts
        .iter()
        .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
}

fn num(parts: &[&str], name: &str, line: &str) -> u32 {
    let v = field(parts, name).unwrap_or_else(|| panic!("missing {name} in `{line}`"));
    v.parse()
        .unwrap_or_else(|e| panic!("bad {name} in `{line}`: {e}"))
}

fn error_name(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::TooManyReplicas { .. } => "TooManyReplicas",
        ConfigError::WriteQuorumTooSmall { .. } => "WriteQuorumTooSmall",
        ConfigError::WriteNotLive { .. } => "WriteNotLive",
        ConfigError::ReadQuorumExceedsN { .. } => "ReadQuorumExceedsN",
        ConfigError::Timing(_) => "Timing",
    }
}

#[test]
fn quorum_cases_table() {
    let table = include_str!("quorum_cases.txt");
    let mut checked = 0;
    for line in table
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (input, expect) = line
            .split_once("->")
            .unwrap_or_else(|| panic!("no `->` in `{line}`"));
        let ins: Vec<&str> = input.split_whitespace().collect();
        let outs: Vec<&str> = expect.split_whitespace().collect();
        let mode = match field(&ins, "mode") {
            None | Some("rr") => Mode::Rr,
            Some("cft") => Mode::Cft,
            Some(other) => panic!("unknown mode {other} in `{line}`"),
        };
        let (m_r, f) = (num(&ins, "m_r", line), num(&ins, "f", line));
        let result = Quorums::new(mode, m_r, f);
        if outs.first() == Some(&"error") {
            let want = outs.get(1).copied().unwrap_or_default();
            match result {
                Err(e) => {
                    assert_eq!(error_name(&e), want, "`{line}`");
                    assert!(
                        e.to_string().contains("N = max(M_R, F) + F + 1"),
                        "error names the formula: {e}"
                    );
                }
                Ok(q) => panic!("`{line}`: expected {want}, got n={}", q.n()),
            }
        } else {
            let q = result.unwrap_or_else(|e| panic!("`{line}`: {e}"));
            let s = num(&ins, "s", line);
            let got = (q.n(), q.write(), q.read(s), q.super_(s));
            let want = (
                num(&outs, "n", line),
                num(&outs, "w", line),
                num(&outs, "r", line),
                num(&outs, "super", line),
            );
            assert_eq!(got, want, "`{line}` (n, w, r, super)");
        }
        checked += 1;
    }
    assert!(checked >= 25, "table has {checked} cases");
}
