//! The patch stack: which replacement each function runs, and what a change to the stack does.
//!
//! Patches are kept in the order they were applied. For each target function the newest patch
//! that replaces it wins; removing a patch, even from the middle, lets the one below show again.
//! A patch with `replace_all` takes the place of every patch below it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// One applied patch, as the stack sees it: an id and the functions it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer<K> {
    /// The engine's id of the patch.
    pub id: u64,
    /// The replaced functions and the address of each replacement.
    pub funcs: Vec<(K, usize)>,
}

/// What one function changes from and to; `None` is the original body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<K> {
    /// The function.
    pub key: K,
    /// The code it runs now.
    pub from: Option<usize>,
    /// The code it runs after the change.
    pub to: Option<usize>,
}

/// The applied patches, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack<K> {
    layers: Vec<Layer<K>>,
}

impl<K> Default for Stack<K> {
    fn default() -> Self {
        Stack { layers: Vec::new() }
    }
}

impl<K: Ord + Clone> Stack<K> {
    /// Returns the layers, oldest first.
    pub fn layers(&self) -> &[Layer<K>] {
        &self.layers
    }

    /// Returns the code each replaced function runs: the newest layer's replacement.
    pub fn targets(&self) -> BTreeMap<K, usize> {
        let mut map = BTreeMap::new();
        for layer in &self.layers {
            for (key, addr) in &layer.funcs {
                map.insert(key.clone(), *addr);
            }
        }
        map
    }

    /// Returns the stack with `layer` applied on top (replacing every layer if `replace_all`).
    pub fn pushed(&self, layer: Layer<K>, replace_all: bool) -> Stack<K> {
        let mut layers = if replace_all { Vec::new() } else { self.layers.clone() };
        layers.push(layer);
        Stack { layers }
    }

    /// Returns the stack without the layer `id`, or `None` if there is no such layer.
    pub fn removed(&self, id: u64) -> Option<Stack<K>> {
        let at = self.layers.iter().position(|l| l.id == id)?;
        let mut layers = self.layers.clone();
        layers.remove(at);
        Some(Stack { layers })
    }

    /// Returns the functions whose code differs between `self` and `next`.
    pub fn changes(&self, next: &Stack<K>) -> Vec<Change<K>> {
        let before = self.targets();
        let after = next.targets();
        let mut keys: Vec<&K> = before.keys().chain(after.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter_map(|k| {
                let (from, to) = (before.get(k).copied(), after.get(k).copied());
                (from != to).then(|| Change { key: k.clone(), from, to })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn layer(id: u64, funcs: &[(&'static str, usize)]) -> Layer<&'static str> {
        Layer { id, funcs: funcs.to_vec() }
    }

    #[test]
    fn newest_wins_and_middle_removal_restores_below() {
        let s0 = Stack::default();
        let s1 = s0.pushed(layer(1, &[("f", 0x10)]), false);
        let s2 = s1.pushed(layer(2, &[("f", 0x20), ("g", 0x21)]), false);
        let s3 = s2.pushed(layer(3, &[("f", 0x30)]), false);
        assert_eq!(s3.targets().get("f"), Some(&0x30));
        let without_middle = s3.removed(2).unwrap();
        assert_eq!(without_middle.targets().get("f"), Some(&0x30));
        assert_eq!(without_middle.targets().get("g"), None);
        assert_eq!(s3.changes(&without_middle), vec![Change { key: "g", from: Some(0x21), to: None }]);
        let without_top = s3.removed(3).unwrap();
        assert_eq!(s3.changes(&without_top), vec![Change { key: "f", from: Some(0x30), to: Some(0x20) }]);
    }

    #[test]
    fn replace_all_drops_every_layer_below() {
        let s = Stack::default()
            .pushed(layer(1, &[("f", 0x10), ("g", 0x11)]), false)
            .pushed(layer(2, &[("f", 0x20)]), false);
        let r = s.pushed(layer(3, &[("f", 0x30)]), true);
        assert_eq!(r.layers().len(), 1);
        assert_eq!(
            s.changes(&r),
            vec![
                Change { key: "f", from: Some(0x20), to: Some(0x30) },
                Change { key: "g", from: Some(0x11), to: None },
            ]
        );
    }

    #[test]
    fn removing_an_unknown_layer_is_none() {
        let s: Stack<&str> = Stack::default();
        assert!(s.removed(7).is_none());
    }
}
