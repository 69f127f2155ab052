//! What a data key is for. One active key per (tenant, purpose).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Data,
    BlindIndex,
    Audit,
    Token,
    /// The database's audit checkpoint signing key (an Ed25519 seed),
    /// kept under the tenant '' that no tenant id can be.
    AuditSigning,
}

impl Purpose {
    pub const ALL: [Purpose; 5] = [
        Purpose::Data,
        Purpose::BlindIndex,
        Purpose::Audit,
        Purpose::Token,
        Purpose::AuditSigning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Data => "data",
            Purpose::BlindIndex => "blind_index",
            Purpose::Audit => "audit",
            Purpose::Token => "token",
            Purpose::AuditSigning => "audit_signing",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        Purpose::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Purpose::ALL {
            assert_eq!(Purpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(Purpose::parse("Data"), None);
        assert_eq!(Purpose::parse(""), None);
    }
}
