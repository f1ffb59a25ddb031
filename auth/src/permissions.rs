//! Channel permissions: publish and subscribe, each an allow list and a
//! deny list of [patterns](crate::pattern). Deny wins; an empty allow list
//! allows nothing.

use serde::{Deserialize, Serialize};

use crate::pattern::{PatternError, PatternSet};

/// Most patterns in one allow or deny list (token claims and policy alike):
/// every check walks them, so their number is bounded.
pub const MAX_PATTERNS: usize = 256;

/// What a connection asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `1t` (and console or admin publish).
    Publish,
    /// `1c` with a TTL above zero.
    Subscribe,
}

impl Operation {
    /// `publish` or `subscribe`, as reasons and logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Subscribe => "subscribe",
        }
    }
}

/// One operation's lists as written in a token or a policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleText {
    /// Channels allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Channels denied even when allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// Both operations' lists as written (the `perm` claim, a policy entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsText {
    /// Who may publish where.
    #[serde(default)]
    pub publish: RuleText,
    /// Who may subscribe where.
    #[serde(default)]
    pub subscribe: RuleText,
}

/// Why permissions could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PermissionsError {
    /// A pattern was refused.
    #[error("{list}: {source}")]
    Pattern {
        /// Which list (`publish.allow` …).
        list: &'static str,
        /// The pattern's error.
        source: PatternError,
    },
    /// A list is longer than [`MAX_PATTERNS`].
    #[error("{list}: {count} patterns, at most {MAX_PATTERNS}")]
    TooMany {
        /// Which list.
        list: &'static str,
        /// How many it had.
        count: usize,
    },
}

/// One operation's compiled lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    allow: PatternSet,
    deny: PatternSet,
}

impl Rule {
    /// Allows `channel` when an allow pattern matches and no deny pattern does.
    pub fn allows(&self, channel: &str) -> bool {
        self.allow.matches(channel) && !self.deny.matches(channel)
    }

    /// A rule allowing every channel.
    pub fn everything() -> Rule {
        Rule {
            allow: PatternSet::new(&["*"]).expect("valid"),
            deny: PatternSet::default(),
        }
    }

    fn compile(text: &RuleText, name: [&'static str; 2]) -> Result<Rule, PermissionsError> {
        let set = |list: &[String], name| {
            if list.len() > MAX_PATTERNS {
                return Err(PermissionsError::TooMany {
                    list: name,
                    count: list.len(),
                });
            }
            PatternSet::new(list).map_err(|source| PermissionsError::Pattern { list: name, source })
        };
        Ok(Rule {
            allow: set(&text.allow, name[0])?,
            deny: set(&text.deny, name[1])?,
        })
    }

    /// The lists as written.
    pub fn text(&self) -> RuleText {
        RuleText {
            allow: self.allow.texts(),
            deny: self.deny.texts(),
        }
    }
}

/// Compiled publish and subscribe rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Where publishing is allowed.
    pub publish: Rule,
    /// Where subscribing is allowed.
    pub subscribe: Rule,
}

impl Permissions {
    /// Compiles the written lists.
    pub fn compile(text: &PermissionsText) -> Result<Permissions, PermissionsError> {
        Ok(Permissions {
            publish: Rule::compile(&text.publish, ["publish.allow", "publish.deny"])?,
            subscribe: Rule::compile(&text.subscribe, ["subscribe.allow", "subscribe.deny"])?,
        })
    }

    /// Everything allowed (the `off` mode's implicit rights).
    pub fn everything() -> Permissions {
        Permissions {
            publish: Rule::everything(),
            subscribe: Rule::everything(),
        }
    }

    /// Whether `operation` on `channel` is allowed.
    pub fn allows(&self, operation: Operation, channel: &str) -> bool {
        match operation {
            Operation::Publish => self.publish.allows(channel),
            Operation::Subscribe => self.subscribe.allows(channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(pub_allow: &[&str], pub_deny: &[&str]) -> Permissions {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Permissions::compile(&PermissionsText {
            publish: RuleText {
                allow: owned(pub_allow),
                deny: owned(pub_deny),
            },
            subscribe: RuleText::default(),
        })
        .unwrap()
    }

    #[test]
    fn deny_wins_and_empty_allows_nothing() {
        let p = perms(&["game/*"], &["game/admin/*"]);
        assert!(p.allows(Operation::Publish, "game/7/chat"));
        assert!(!p.allows(Operation::Publish, "game/admin/restart"));
        assert!(!p.allows(Operation::Publish, "ops"));
        assert!(!p.allows(Operation::Subscribe, "game/7/chat"));
        assert!(Permissions::everything().allows(Operation::Subscribe, "x"));
    }

    proptest::proptest! {
        /// Deny wins, whatever the lists: a channel is allowed exactly when
        /// some allow pattern matches and no deny pattern does.
        #[test]
        fn deny_always_wins(
            allow in proptest::collection::vec("[ab*/]{0,4}", 0..4),
            deny in proptest::collection::vec("[ab*/]{0,4}", 0..4),
            channel in "[ab/]{0,6}",
        ) {
            let allow_refs: Vec<&str> = allow.iter().map(String::as_str).collect();
            let deny_refs: Vec<&str> = deny.iter().map(String::as_str).collect();
            let p = perms(&allow_refs, &deny_refs);
            let any = |list: &[String]| list.iter().any(|t| crate::pattern::Pattern::new(t).unwrap().matches(&channel));
            proptest::prop_assert_eq!(
                p.allows(Operation::Publish, &channel),
                any(&allow) && !any(&deny)
            );
            if any(&deny) {
                proptest::prop_assert!(!p.allows(Operation::Publish, &channel));
            }
        }
    }

    #[test]
    fn lists_are_bounded() {
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| i.to_string()).collect();
        let text = PermissionsText {
            publish: RuleText {
                allow: many,
                deny: vec![],
            },
            ..Default::default()
        };
        assert!(matches!(
            Permissions::compile(&text),
            Err(PermissionsError::TooMany { .. })
        ));
    }
}
