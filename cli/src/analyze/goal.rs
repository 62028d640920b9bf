//! Goals: which requests count as a unit doing what the experiment is for.
//!
//! `NAME=[METHOD ]PATH[ CLASS]`: `purchase=POST /checkout/complete 2xx`. PATH is exact, or a
//! prefix when it ends in `*` (`/checkout/*`); the path is compared without its query. METHOD
//! and the status CLASS (`2xx` … `5xx`) are optional.

/// One goal: a name and the requests that reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub name: String,
    pub method: Option<String>,
    pub path: PathMatch,
    /// The status class, 1 to 5 (`2xx` is 2).
    pub class: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl Goal {
    /// Parses `NAME=[METHOD ]PATH[ CLASS]`; the error says what is wrong, naming the text.
    pub fn parse(text: &str) -> Result<Goal, String> {
        let bad = |why: &str| {
            format!("goal '{text}': {why} (expected NAME=[METHOD ]PATH[ CLASS], e.g. purchase=POST /checkout/complete 2xx)")
        };
        let (name, rule) = text.split_once('=').ok_or_else(|| bad("no '='"))?;
        let name = name.trim();
        let valid_name = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.len() <= 64
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        // Names become SQL column names (`analyze --sql`): letters, digits and '_' only.
        if !valid_name {
            return Err(bad(
                "the name must start with a-z and hold at most 64 of a-z, 0-9, '_'",
            ));
        }
        let mut words: Vec<&str> = rule.split_whitespace().collect();
        let class = match words.last() {
            Some(w) if w.len() == 3 && w.ends_with("xx") => {
                let d = w.as_bytes()[0];
                if !(b'1'..=b'5').contains(&d) {
                    return Err(bad("the status class must be 1xx to 5xx"));
                }
                words.pop();
                Some(u16::from(d - b'0'))
            }
            _ => None,
        };
        let (method, path) = match words.as_slice() {
            [path] => (None, *path),
            [method, path] => {
                if !method.bytes().all(|c| c.is_ascii_uppercase()) {
                    return Err(bad("the method must be upper-case letters"));
                }
                (Some(method.to_string()), *path)
            }
            _ => {
                return Err(bad(
                    "give a path, optionally after a method and before a status class",
                ))
            }
        };
        if !path.starts_with('/') {
            return Err(bad("the path must start with '/'"));
        }
        let path = match path.strip_suffix('*') {
            Some(prefix) => PathMatch::Prefix(prefix.to_string()),
            None => PathMatch::Exact(path.to_string()),
        };
        Ok(Goal {
            name: name.to_string(),
            method,
            path,
            class,
        })
    }

    /// Whether a request reaches the goal (`path` with or without its query).
    pub fn matches(&self, method: &str, path: &str, status: u16) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        if self.class.is_some_and(|c| status / 100 != c) {
            return false;
        }
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match &self.path {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_goal_names_method_path_and_status_class() {
        let g = Goal::parse("purchase=POST /checkout/complete 2xx").unwrap();
        assert!(g.matches("POST", "/checkout/complete?x=1", 201));
        assert!(!g.matches("GET", "/checkout/complete", 200));
        assert!(!g.matches("POST", "/checkout/complete", 500));
        assert!(!g.matches("POST", "/checkout/completed", 200));
        let any = Goal::parse("browse=/product/*").unwrap();
        assert!(any.matches("GET", "/product/42", 404));
        assert!(!any.matches("GET", "/products", 200));
    }

    #[test]
    fn a_malformed_goal_says_what_is_wrong() {
        let e = |t: &str| Goal::parse(t).unwrap_err();
        let usage =
            "(expected NAME=[METHOD ]PATH[ CLASS], e.g. purchase=POST /checkout/complete 2xx)";
        assert_eq!(e("purchase"), format!("goal 'purchase': no '=' {usage}"));
        assert_eq!(e("Buy=/x"), format!("goal 'Buy=/x': the name must start with a-z and hold at most 64 of a-z, 0-9, '_' {usage}"));
        assert_eq!(
            e("buy=post /x"),
            format!("goal 'buy=post /x': the method must be upper-case letters {usage}")
        );
        assert_eq!(
            e("buy=x"),
            format!("goal 'buy=x': the path must start with '/' {usage}")
        );
        assert_eq!(
            e("buy=/x 6xx"),
            format!("goal 'buy=/x 6xx': the status class must be 1xx to 5xx {usage}")
        );
        assert_eq!(e("buy=GET /x /y"), format!("goal 'buy=GET /x /y': give a path, optionally after a method and before a status class {usage}"));
    }
}
