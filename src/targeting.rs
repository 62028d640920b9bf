//! `when`: the targeting conditions an experiment's requests must meet.

use crate::request::RequestView;

/// All given conditions must hold; an empty list or map means "no condition".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct When {
    /// Any of these prefixes of the path (without the query).
    pub path_prefix: Vec<Vec<u8>>,
    /// Any of these methods, compared exactly (HTTP methods are case-sensitive).
    pub methods: Vec<Vec<u8>>,
    /// Any of these hosts, lower-case; the request's host is compared case-insensitively
    /// without its port.
    pub hosts: Vec<Vec<u8>>,
    /// Header names are lower-case.
    pub headers: Vec<(Vec<u8>, Condition)>,
    /// Cookie conditions.
    pub cookies: Vec<(Vec<u8>, Condition)>,
    /// Query-parameter conditions.
    pub query: Vec<(Vec<u8>, Condition)>,
    /// `any`: one of these must hold as well (empty: no such condition).
    pub any: Vec<When>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A condition on one value.
pub enum Condition {
    /// The value is one of these (absent: false).
    In(Vec<Vec<u8>>),
    /// The value is none of these (absent: true, since an absent value is in no list).
    NotIn(Vec<Vec<u8>>),
    /// The value is (or is not) present.
    Present(bool),
    /// The value starts with this (absent: false).
    Prefix(Vec<u8>),
    /// The value ends with this (absent: false): flagd's `ends_with`.
    Suffix(Vec<u8>),
}

impl Condition {
    /// Whether the condition holds for `value` (`None`: absent).
    pub fn holds(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (Condition::Present(want), v) => v.is_some() == *want,
            (Condition::In(list), Some(v)) => list.iter().any(|x| x == v),
            (Condition::NotIn(list), Some(v)) => !list.iter().any(|x| x == v),
            (Condition::NotIn(_), None) => true,
            (Condition::Prefix(p), Some(v)) => v.starts_with(p),
            (Condition::Suffix(s), Some(v)) => v.ends_with(s),
            (Condition::In(_) | Condition::Prefix(_) | Condition::Suffix(_), None) => false,
        }
    }
}

impl When {
    /// No condition at all.
    pub fn is_empty(&self) -> bool {
        *self == When::default()
    }

    /// Whether every condition holds for the request.
    pub fn matches(&self, req: &RequestView) -> bool {
        (self.path_prefix.is_empty() || self.path_prefix.iter().any(|p| req.path().starts_with(p)))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == req.method()))
            && (self.hosts.is_empty()
                || self
                    .hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(req.host_without_port())))
            && self.headers.iter().all(|(n, c)| c.holds(req.header(n)))
            && self.cookies.iter().all(|(n, c)| c.holds(req.cookie(n)))
            && self
                .query
                .iter()
                .all(|(n, c)| c.holds(req.query(n).as_deref()))
            && (self.any.is_empty() || self.any.iter().any(|w| w.matches(req)))
    }
}
