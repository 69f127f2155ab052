//! `warden.databases`: which databases may run a pg_warden worker.
//!
//! Empty (the default) means every database that allows connections, is
//! not a template, and has the extension installed. Otherwise a
//! comma-separated list of database names, matched exactly (database names
//! are case-sensitive); a name may be double-quoted to hold a comma.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseFilter {
    All,
    Only(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseFilterError {
    EmptyName { position: usize },
    UnterminatedQuote,
    TextAfterQuote { position: usize },
}

impl fmt::Display for DatabaseFilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseFilterError::EmptyName { position } => {
                write!(f, "list item {} is empty", position + 1)
            }
            DatabaseFilterError::UnterminatedQuote => write!(f, "a double quote is not closed"),
            DatabaseFilterError::TextAfterQuote { position } => {
                write!(
                    f,
                    "list item {} has text after its closing quote",
                    position + 1
                )
            }
        }
    }
}

impl DatabaseFilter {
    pub fn parse(spec: &str) -> Result<DatabaseFilter, DatabaseFilterError> {
        if spec.trim().is_empty() {
            return Ok(DatabaseFilter::All);
        }
        let mut names = Vec::new();
        let mut chars = spec.chars().peekable();
        loop {
            let position = names.len();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut name = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(DatabaseFilterError::UnterminatedQuote),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            name.push('"');
                        }
                        Some('"') => break,
                        Some(c) => name.push(c),
                    }
                }
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|c| *c != ',') {
                    return Err(DatabaseFilterError::TextAfterQuote { position });
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    name.push(c);
                    chars.next();
                }
                name = name.trim_end().to_string();
            }
            if name.is_empty() {
                return Err(DatabaseFilterError::EmptyName { position });
            }
            if !names.contains(&name) {
                names.push(name);
            }
            match chars.next() {
                Some(',') => continue,
                None => break,
                Some(_) => unreachable!("name scanning stops only at a comma or the end"),
            }
        }
        Ok(DatabaseFilter::Only(names))
    }

    pub fn allows(&self, datname: &str) -> bool {
        match self {
            DatabaseFilter::All => true,
            DatabaseFilter::Only(names) => names.iter().any(|n| n == datname),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn only(names: &[&str]) -> DatabaseFilter {
        DatabaseFilter::Only(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn empty_means_all() {
        assert_eq!(DatabaseFilter::parse(""), Ok(DatabaseFilter::All));
        assert_eq!(DatabaseFilter::parse("  "), Ok(DatabaseFilter::All));
        assert!(DatabaseFilter::All.allows("anything"));
    }

    #[test]
    fn lists_are_trimmed_exact_and_deduplicated() {
        assert_eq!(
            DatabaseFilter::parse("app, Billing ,app"),
            Ok(only(&["app", "Billing"]))
        );
        let f = DatabaseFilter::parse("app,Billing").unwrap();
        assert!(f.allows("Billing"));
        assert!(!f.allows("billing"));
        assert!(!f.allows("postgres"));
    }

    #[test]
    fn quoted_names_hold_commas_and_quotes() {
        assert_eq!(
            DatabaseFilter::parse(r#""a,b", "say ""hi""" "#),
            Ok(only(&["a,b", "say \"hi\""]))
        );
    }

    #[test]
    fn malformed_lists_are_refused() {
        assert_eq!(
            DatabaseFilter::parse("a,,b"),
            Err(DatabaseFilterError::EmptyName { position: 1 })
        );
        assert_eq!(
            DatabaseFilter::parse("a,"),
            Err(DatabaseFilterError::EmptyName { position: 1 })
        );
        assert_eq!(
            DatabaseFilter::parse("\"a"),
            Err(DatabaseFilterError::UnterminatedQuote)
        );
        assert_eq!(
            DatabaseFilter::parse("\"a\"b"),
            Err(DatabaseFilterError::TextAfterQuote { position: 0 })
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,64}") {
            let _ = DatabaseFilter::parse(&s);
        }

        #[test]
        fn quoting_round_trips(names in proptest::collection::vec(".{1,12}", 1..5)) {
            let spec: Vec<String> = names.iter().map(|n| format!("\"{}\"", n.replace('"', "\"\""))).collect();
            let parsed = DatabaseFilter::parse(&spec.join(",")).unwrap();
            for n in &names {
                prop_assert!(parsed.allows(n));
            }
        }
    }
}
