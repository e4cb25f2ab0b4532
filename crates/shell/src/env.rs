//! Where the lexer looks variables up.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// A read-only view of the variables visible to an expansion.
///
/// A name is either set (possibly to the empty string) or unset; `${V-w}` and `${V:-w}`
/// distinguish the two, so `get` must return `Some("")` for a variable set to empty.
pub trait Env {
    fn get(&self, name: &str) -> Option<&str>;
}

impl<E: Env + ?Sized> Env for &E {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }
}

impl<S: BuildHasher> Env for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }
}

/// An ordered list of definitions, as Docker keeps `ENV`/`ARG`: a later entry overrides an
/// earlier one with the same name.
impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Env::get(self.as_slice(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn later_list_entry_wins() {
        let env = pairs(&[("foo", "bar"), ("car", "hat"), ("car", "bike")]);
        assert_eq!(Env::get(&env, "car"), Some("bike"));
        assert_eq!(Env::get(&env, "foo"), Some("bar"));
        assert_eq!(Env::get(env.as_slice(), "car"), Some("bike"));
    }

    #[test]
    fn empty_value_is_set_and_missing_is_unset() {
        let env = pairs(&[("foo", "")]);
        assert_eq!(Env::get(&env, "foo"), Some(""));
        assert_eq!(
            Env::get(&env, "FOO"),
            None,
            "names are case-sensitive on Linux"
        );
        let map: HashMap<String, String> = env.iter().cloned().collect();
        assert_eq!(Env::get(&map, "foo"), Some(""));
        let tree: BTreeMap<String, String> = env.into_iter().collect();
        assert_eq!(Env::get(&tree, "foo"), Some(""));
        assert_eq!(Env::get(&tree, "bar"), None);
    }
}
