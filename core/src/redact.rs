//! Log redaction: statement text that calls one of pg_warden's
//! value-taking functions (tenant tokens, plaintexts; later secrets) has
//! its string literals replaced before it reaches the server log, so a
//! `log_statement`, `log_min_duration_statement` or error's STATEMENT line
//! never carries the value. Parameters bound with the extended protocol
//! (`parameters: $1 = '...'`) are literals too.

/// Functions whose arguments are values that must not be logged.
pub const VALUE_TAKING_FUNCTIONS: &[&str] = &[
    "set_tenant_token",
    "tenant_token",
    "encrypt",
    "decrypt",
    "decrypt_text",
    "decrypt_jsonb",
    "reencrypt",
    "blind_index",
    // audit payloads can be erased from the log (GDPR), not from a server log
    "audit_emit",
    // secrets (what secret_get returns shows in a failed cast's message),
    // keys and MACs
    "secret_set",
    "secret_get",
    "secret_get_jsonb",
    "webhook_sign",
    "webhook_verify",
    "hmac_sha256",
    "timing_safe_equal",
    "hash_prefix",
];

/// What a redacted literal becomes.
pub const REDACTED: &str = "'<redacted>'";

/// Whether `text` calls one of `VALUE_TAKING_FUNCTIONS`: the name (any
/// case, quoted or not, not part of a longer identifier), optional white
/// space or comments, `(`. `EXECUTE` of a prepared statement counts too:
/// what it runs is not in its text.
pub fn calls_value_function(text: &str) -> bool {
    let lower = without_comments_and_quotes(&text.to_ascii_lowercase());
    if executes_with_arguments(&lower) {
        return true;
    }
    let b = lower.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    VALUE_TAKING_FUNCTIONS.iter().any(|name| {
        lower.match_indices(name).any(|(at, _)| {
            let before_ok = at == 0 || !ident(b[at - 1]) || b[at - 1] == b'.';
            let rest = &b[at + name.len()..];
            let open = rest.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'(');
            before_ok && open
        })
    })
}

/// `EXECUTE name(` somewhere in `lower`: the SQL command that runs a
/// prepared statement with arguments (not the `execute <name>: ...` of
/// extended-protocol log lines).
fn executes_with_arguments(lower: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    lower.match_indices("execute").any(|(at, word)| {
        let before = lower[..at].chars().next_back();
        if before.is_some_and(ident) {
            return false;
        }
        let rest = &lower[at + word.len()..];
        let after_space = rest.trim_start();
        if after_space.len() == rest.len() {
            return false; // "executed", "execute(" ...
        }
        let name_len = after_space
            .find(|c: char| !ident(c))
            .unwrap_or(after_space.len());
        name_len > 0 && after_space[name_len..].trim_start().starts_with('(')
    })
}

/// `text` without `/* ... */` comments and double quotes, so that
/// `warden."encrypt"/**/(` reads as `warden.encrypt(`.
fn without_comments_and_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        rest = rest[start + 2..]
            .find("*/")
            .map_or("", |end| &rest[start + 2 + end + 2..]);
    }
    out.push_str(rest);
    out.replace('"', "")
}

/// `sql` with every string literal (`'...'` with `''` escapes, `E'...'`
/// with backslash escapes, `U&'...'`, `B'...'`, `X'...'`, and dollar
/// quotes `$tag$...$tag$`) replaced by `'<redacted>'`. Quoted identifiers
/// and comments are kept; an unterminated literal is redacted to the end.
pub fn redact_literals(sql: &str) -> String {
    redact(sql, Quoting::Sql, true)
}

/// As `redact_literals` with `standard_conforming_strings = off`, where a
/// backslash escapes the next character in every string literal.
pub fn redact_literals_nonstandard(sql: &str) -> String {
    redact(sql, Quoting::Sql, false)
}

/// As `redact_literals`, for log text that quotes SQL in double quotes
/// (`SQL statement "SELECT ..."`): a double quote starts nothing, so a
/// literal inside the quoted statement is found (an apostrophe inside a
/// quoted identifier then redacts more than needed, never less).
pub fn redact_literals_in_text(text: &str, standard_strings: bool) -> String {
    redact(text, Quoting::Text, standard_strings)
}

/// As `redact_literals_in_text`, and every double-quoted span too: for
/// messages of errors raised while a value-taking function ran, which
/// quote the offending input (`invalid input syntax for type uuid:
/// "..."`, `Token "..." is invalid`).
pub fn redact_quoted(text: &str, standard_strings: bool) -> String {
    redact(text, Quoting::Everything, standard_strings)
}

#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    /// SQL: double quotes delimit identifiers, kept
    Sql,
    /// log text quoting SQL: double quotes start nothing
    Text,
    /// double-quoted spans are values too
    Everything,
}

fn redact(sql: &str, quoting: Quoting, standard_strings: bool) -> String {
    let sql_identifiers = quoting == Quoting::Sql;
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = find(b, i + 2, b"*/").map_or(b.len(), |p| p + 2);
            }
            b'"' if quoting == Quoting::Everything => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == b'"')
                    .map_or(b.len(), |p| i + 1 + p + 1);
                out.push_str(&sql[copied..i]);
                out.push_str("\"<redacted>\"");
                copied = end;
                i = end;
            }
            b'"' if sql_identifiers => {
                // quoted identifier, "" escapes
                let mut j = i + 1;
                while j < b.len() {
                    if b[j] == b'"' {
                        if b.get(j + 1) == Some(&b'"') {
                            j += 2;
                            continue;
                        }
                        break;
                    }
                    j += 1;
                }
                i = (j + 1).min(b.len());
            }
            b'\'' => {
                // a prefix letter (E, B, X, N, U&) belongs to the literal
                let mut start = i;
                let mut backslashes = !standard_strings;
                if start >= 1
                    && matches!(
                        b[start - 1],
                        b'e' | b'E' | b'b' | b'B' | b'x' | b'X' | b'n' | b'N'
                    )
                    && (start < 2 || !is_ident(b[start - 2]))
                {
                    backslashes = matches!(b[start - 1], b'e' | b'E');
                    start -= 1;
                } else if start >= 2 && b[start - 1] == b'&' && matches!(b[start - 2], b'u' | b'U')
                {
                    start -= 2;
                }
                let mut end = string_end(b, i + 1, backslashes);
                // a backslash before a multi-byte character skips into it
                while end < b.len() && !sql.is_char_boundary(end) {
                    end += 1;
                }
                out.push_str(&sql[copied..start]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            b'$' if i == 0 || !is_ident(b[i - 1]) => {
                // $tag$ ... $tag$ (a $1 parameter is not one)
                match dollar_tag(b, i) {
                    Some(tag_len) => {
                        let tag = &b[i..i + tag_len];
                        let end = find(b, i + tag_len, tag).map_or(b.len(), |p| p + tag_len);
                        out.push_str(&sql[copied..i]);
                        out.push_str(REDACTED);
                        copied = end;
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| from + p)
}

/// Index just past the closing quote of a literal whose body starts at
/// `from` (or the end of the text).
fn string_end(b: &[u8], from: usize, backslashes: bool) -> usize {
    let mut j = from;
    while j < b.len() {
        match b[j] {
            b'\\' if backslashes => j += 2,
            b'\'' if b.get(j + 1) == Some(&b'\'') => j += 2,
            b'\'' => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The length of the `$tag$` opening at `at`, if it is one.
fn dollar_tag(b: &[u8], at: usize) -> Option<usize> {
    let mut j = at + 1;
    while j < b.len() && b[j] != b'$' {
        if !(b[j].is_ascii_alphabetic()
            || b[j] == b'_'
            || b[j] >= 0x80
            || (j > at + 1 && b[j].is_ascii_digit()))
        {
            return None;
        }
        j += 1;
    }
    (j < b.len()).then_some(j + 1 - at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_calls_of_value_taking_functions() {
        assert!(calls_value_function("SELECT warden.set_tenant_token('x')"));
        assert!(calls_value_function("select WARDEN.ENCRYPT ('x')"));
        assert!(calls_value_function("SELECT encrypt($1, $2)"));
        assert!(calls_value_function(
            "SELECT warden.audit_emit('user.updated', '{\"email\": \"a@b.c\"}')"
        ));
        assert!(calls_value_function(
            "INSERT INTO t VALUES (warden.blind_index('a', 'b'))"
        ));
        assert!(!calls_value_function("SELECT warden.set_tenant('acme')"));
        assert!(!calls_value_function("SELECT my_encrypt_log FROM t"));
        assert!(!calls_value_function("SELECT 1"));
    }

    #[test]
    fn redacts_every_kind_of_string_literal() {
        for (sql, want) in [
            ("SELECT f('secret')", "SELECT f('<redacted>')"),
            ("SELECT f('it''s')", "SELECT f('<redacted>')"),
            (
                "SELECT f(E'a\\'b', 'c')",
                "SELECT f('<redacted>', '<redacted>')",
            ),
            ("SELECT f(U&'d\\0061t')", "SELECT f('<redacted>')"),
            (
                "SELECT f(X'1F', B'101')",
                "SELECT f('<redacted>', '<redacted>')",
            ),
            ("SELECT f($$x'y$$)", "SELECT f('<redacted>')"),
            ("SELECT f($t$a$$b$t$)", "SELECT f('<redacted>')"),
            ("SELECT f($1, $2)", "SELECT f($1, $2)"),
            ("SELECT \"col'x\" FROM t", "SELECT \"col'x\" FROM t"),
            (
                "SELECT 1 -- 'note'\n, 'v'",
                "SELECT 1 -- 'note'\n, '<redacted>'",
            ),
            ("SELECT /* 'c' */ 'v'", "SELECT /* 'c' */ '<redacted>'"),
            (
                "parameters: $1 = 'tok', $2 = NULL",
                "parameters: $1 = '<redacted>', $2 = NULL",
            ),
            ("SELECT f('unterminated", "SELECT f('<redacted>'"),
            ("SELECT name'x'", "SELECT name'<redacted>'"),
        ] {
            assert_eq!(redact_literals(sql), want, "{sql}");
        }
    }

    #[test]
    fn quoted_names_comments_and_execute_count_as_calls() {
        assert!(calls_value_function("SELECT warden.\"encrypt\"('x')"));
        assert!(calls_value_function("SELECT warden.encrypt/**/('x')"));
        assert!(calls_value_function("SELECT warden.encrypt /* a */ ('x')"));
        assert!(calls_value_function("EXECUTE p('secret')"));
        assert!(calls_value_function("execute\tp('secret')"));
        assert!(calls_value_function("statement: EXECUTE p ('secret')"));
        assert!(!calls_value_function("SELECT executed FROM t"));
        assert!(!calls_value_function("execute <unnamed>: SELECT f('x')"));
        assert!(!calls_value_function("execute S_1: SELECT f('x')"));
    }

    #[test]
    fn backslashes_escape_quotes_only_where_strings_are_not_standard() {
        // standard_conforming_strings = on: '\' is one backslash
        assert_eq!(
            redact_literals("SELECT f('\\', 'secret')"),
            "SELECT f('<redacted>', '<redacted>')"
        );
        // off: '\' SECRET ' is one literal
        assert_eq!(
            redact_literals_nonstandard("SELECT f('\\' SECRET ')"),
            "SELECT f('<redacted>')"
        );
        assert_eq!(
            redact_literals_in_text("SQL statement \"SELECT f('a\\'b')\"", false),
            "SQL statement \"SELECT f('<redacted>')\""
        );
    }

    #[test]
    fn messages_quoting_input_lose_it() {
        assert_eq!(
            redact_quoted("invalid input syntax for type uuid: \"secret\"", true),
            "invalid input syntax for type uuid: \"<redacted>\""
        );
        assert_eq!(
            redact_quoted("Token \"12-3\" is invalid.", true),
            "Token \"<redacted>\" is invalid."
        );
    }

    #[test]
    fn log_text_quoting_a_statement_is_redacted_inside_the_quotes() {
        for (text, want) in [
            (
                "SQL statement \"SELECT warden.encrypt($y$v$y$)\"",
                "SQL statement \"SELECT warden.encrypt('<redacted>')\"",
            ),
            (
                "PL/pgSQL function inline_code_block line 1 at SQL statement \"SELECT f('v')\"",
                "PL/pgSQL function inline_code_block line 1 at SQL statement \"SELECT f('<redacted>')\"",
            ),
            ("unnamed portal with parameters: $1 = 'v'", "unnamed portal with parameters: $1 = '<redacted>'"),
        ] {
            assert_eq!(redact_literals_in_text(text, true), want, "{text}");
        }
    }

    proptest! {
        // whatever the value, it does not survive redaction
        #[test]
        fn no_literal_value_survives(v in "[a-zA-Z0-9 ]{6,40}", quote in 0usize..3) {
            let lit = match quote {
                0 => format!("'{v}'"),
                1 => format!("E'{v}'"),
                _ => format!("$q${v}$q$"),
            };
            let sql = format!("SELECT warden.encrypt({lit}, 'aad')");
            let out = redact_literals(&sql);
            prop_assert!(!out.contains(&v), "{}", out);
            prop_assert!(out.starts_with("SELECT warden.encrypt("));
        }

        // never panics (backslashes before multi-byte characters too), and
        // text without quotes or dollars is unchanged
        #[test]
        fn total_and_identity_without_literals(s in "(\\PC|E'|\\\\|é|'){0,60}") {
            let out = redact_literals(&s);
            if !s.contains('\'') && !s.contains('$') {
                prop_assert_eq!(out, s);
            }
        }
    }
}
