//! Name reservations: two creates for the same pod/container name and attempt must not
//! both succeed (CRI), and the loser learns which id holds the name.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{Classify, Kind};

#[derive(Debug, thiserror::Error)]
#[error("name {name:?} is reserved for {holder}")]
pub struct NameTaken {
    pub name: String,
    pub holder: String,
}

impl Classify for NameTaken {
    fn kind(&self) -> Kind {
        Kind::AlreadyExists
    }
}

#[derive(Default)]
pub struct NameRegistry {
    names: Mutex<HashMap<String, String>>,
}

impl NameRegistry {
    /// Reserves `name` for `id`; fails naming the current holder.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), NameTaken> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = names.get(name) {
            return Err(NameTaken {
                name: name.to_owned(),
                holder: holder.clone(),
            });
        }
        names.insert(name.to_owned(), id.to_owned());
        Ok(())
    }

    /// Releases `name` if `id` holds it.
    pub fn release(&self, name: &str, id: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.get(name).is_some_and(|h| h == id) {
            names.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_reservation_names_the_holder() {
        let r = NameRegistry::default();
        r.reserve("a_b_c_0", "id1").unwrap();
        let e = r.reserve("a_b_c_0", "id2").unwrap_err();
        assert_eq!(e.holder, "id1");
        r.release("a_b_c_0", "id2");
        assert!(
            r.reserve("a_b_c_0", "id3").is_err(),
            "only the holder releases"
        );
        r.release("a_b_c_0", "id1");
        r.reserve("a_b_c_0", "id3").unwrap();
    }
}
