//! Who receives an event: oRPC's publish filter semantics, enforced by the server.
//!
//! - `tags`: sessions whose token tags intersect the event's tags. No tag filter reaches
//!   everyone; an empty tag list reaches nobody.
//! - `targets`: only these session ids (combined with `tags` by AND). Absent: no restriction.
//! - `exclude`: never these session ids.
//!
//! The filter is stored with the event, so replay applies exactly what live delivery did.

use serde::{Deserialize, Serialize};

/// The filter an event was published with; session lists are resolved ids.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// `None`: no tag filter. `Some(empty)`: no session matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// `None`: every session. `Some(ids)`: only these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// Sessions that never receive the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl Filter {
    /// A filter that lets every session through.
    pub fn everyone() -> Self {
        Self::default()
    }

    /// Whether this is the filter of [`Filter::everyone`], checked without scanning lists.
    pub fn is_everyone(&self) -> bool {
        self.tags.is_none() && self.targets.is_none() && self.exclude.is_empty()
    }

    /// The filter as the stores keep it: JSON, and nothing at all for everyone (most events).
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        if self.is_everyone() {
            Vec::new()
        } else {
            // A filter is strings and lists of strings: serializing it cannot fail.
            serde_json::to_vec(self).unwrap_or_default()
        }
    }

    /// A filter kept by [`Filter::to_stored`]; `None` if the bytes are not one.
    pub(crate) fn from_stored(stored: &[u8]) -> Option<Self> {
        if stored.is_empty() {
            return Some(Self::everyone());
        }
        serde_json::from_slice(stored).ok()
    }

    /// Whether the session `session_id` holding a token with `session_tags` receives the event.
    pub fn admits(&self, session_id: &str, session_tags: &[String]) -> bool {
        if let Some(tags) = &self.tags
            && !tags.iter().any(|tag| session_tags.contains(tag))
        {
            return false;
        }
        if let Some(targets) = &self.targets
            && !targets.iter().any(|target| target == session_id)
        {
            return false;
        }
        !self.exclude.iter().any(|excluded| excluded == session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// oRPC's own matrix: s1 has tags [t1, t2], s2 has [t2], s3 has none.
    #[test]
    fn orpc_matrix() {
        let sessions = [
            ("s1", list(&["t1", "t2"])),
            ("s2", list(&["t2"])),
            ("s3", list(&[])),
        ];
        let some = |items: &[&str]| Some(list(items));
        let cases: Vec<(Filter, &[&str])> = vec![
            (Filter::everyone(), &["s1", "s2", "s3"]),
            (
                Filter {
                    targets: some(&["s1"]),
                    ..Filter::default()
                },
                &["s1"],
            ),
            (
                Filter {
                    exclude: list(&["s1"]),
                    ..Filter::default()
                },
                &["s2", "s3"],
            ),
            (
                Filter {
                    targets: some(&["s1"]),
                    exclude: list(&["s2"]),
                    ..Filter::default()
                },
                &["s1"],
            ),
            (
                Filter {
                    tags: some(&["t1"]),
                    ..Filter::default()
                },
                &["s1"],
            ),
            (
                Filter {
                    tags: some(&["t2"]),
                    ..Filter::default()
                },
                &["s1", "s2"],
            ),
            (
                Filter {
                    tags: some(&["t2"]),
                    exclude: list(&["s1"]),
                    ..Filter::default()
                },
                &["s2"],
            ),
            (
                Filter {
                    tags: some(&["t2"]),
                    targets: some(&["s1"]),
                    ..Filter::default()
                },
                &["s1"],
            ),
            (
                Filter {
                    tags: some(&["t1", "t2", "t2"]),
                    ..Filter::default()
                },
                &["s1", "s2"],
            ),
            (
                Filter {
                    tags: some(&[]),
                    ..Filter::default()
                },
                &[],
            ),
            (
                Filter {
                    targets: some(&[]),
                    ..Filter::default()
                },
                &[],
            ),
        ];
        for (filter, expected) in cases {
            let admitted: Vec<&str> = sessions
                .iter()
                .filter(|(id, tags)| filter.admits(id, tags))
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(admitted, expected, "{filter:?}");
        }
    }

    #[test]
    fn everyone_is_recognised() {
        assert!(Filter::everyone().is_everyone());
        assert!(
            !Filter {
                exclude: list(&["x"]),
                ..Filter::default()
            }
            .is_everyone()
        );
    }
}
