//! Configured node references and browse paths → the server's `NodeId`s
//! (browse paths through `TranslateBrowsePathsToNodeIds`), resolving
//! namespace URIs against the server's namespace array (read at connect and
//! after every reconnect: indexes differ between servers and may change
//! when one restarts).

use std::collections::BTreeMap;
use std::str::FromStr;

use adit_core::opcua::{BrowseName, Identifier, Namespace, NodeRef};
use opcua::types::{
    BrowsePath, ByteString, Guid, NamespaceMap, NodeId, QualifiedName, ReferenceTypeId,
    RelativePath, RelativePathElement,
};

/// The namespace indexes the configured URIs resolved to (compared after a
/// reconnect).
pub type Resolution = BTreeMap<String, Option<u16>>;

/// Resolves every URI of `namespaces` against `map`.
pub fn resolution<'a>(
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    map: &NamespaceMap,
) -> Resolution {
    namespaces
        .into_iter()
        .filter_map(|n| match n {
            Namespace::Uri(u) => Some(u.clone()),
            Namespace::Index(_) => None,
        })
        .map(|u| {
            let index = map.get_index(&u);
            (u, index)
        })
        .collect()
}

/// The URI the server's namespace array gives each of `indexes` (`None`
/// past its end).
pub type IndexUris = BTreeMap<u16, Option<String>>;

/// The URI of each of `indexes` in `map` (compared after a reconnect: an
/// index in use must still name the same namespace; namespaces the server
/// appended do not matter).
pub fn index_uris(indexes: impl IntoIterator<Item = u16>, map: &NamespaceMap) -> IndexUris {
    indexes
        .into_iter()
        .map(|i| {
            let uri = map
                .known_namespaces()
                .iter()
                .find(|(_, &at)| at == i)
                .map(|(uri, _)| uri.clone());
            (i, uri)
        })
        .collect()
}

/// The index of `ns` on this server, or why there is none.
fn index(ns: &Namespace, namespaces: &Resolution) -> Result<u16, String> {
    match ns {
        Namespace::Index(i) => Ok(*i),
        Namespace::Uri(u) => match namespaces.get(u) {
            Some(Some(i)) => Ok(*i),
            _ => Err(format!("the server has no namespace {u:?}")),
        },
    }
}

/// The `TranslateBrowsePathsToNodeIds` request of a browse path.
pub fn browse_path(
    root: &NodeRef,
    path: &[BrowseName],
    namespaces: &Resolution,
) -> Result<BrowsePath, String> {
    let elements = path
        .iter()
        .map(|b| {
            Ok(RelativePathElement {
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                is_inverse: false,
                include_subtypes: true,
                target_name: QualifiedName::new(index(&b.namespace, namespaces)?, b.name.as_str()),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(BrowsePath {
        starting_node: resolve(root, namespaces)?,
        relative_path: RelativePath {
            elements: Some(elements),
        },
    })
}

/// The node id of `node`, or why there is none.
pub fn resolve(node: &NodeRef, namespaces: &Resolution) -> Result<NodeId, String> {
    let ns = index(&node.namespace, namespaces)?;
    Ok(match &node.identifier {
        Identifier::Numeric(n) => NodeId::new(ns, *n),
        Identifier::String(s) => NodeId::new(ns, s.clone()),
        Identifier::Guid(g) => {
            NodeId::new(ns, Guid::from_str(g).map_err(|_| format!("bad GUID {g}"))?)
        }
        Identifier::Opaque(b) => NodeId::new(
            ns,
            ByteString::from_base64(b).ok_or_else(|| format!("bad base64 {b}"))?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_resolve_per_server_and_unknown_ones_are_errors() {
        let a = NodeRef::parse("nsu=urn:tunnel;s=North.CO").unwrap();
        let b = NodeRef::parse("ns=3;i=7").unwrap();
        let c = NodeRef::parse("nsu=urn:missing;i=1").unwrap();
        let mut map = NamespaceMap::new();
        map.add_namespace("urn:other");
        map.add_namespace("urn:tunnel");
        let r = resolution([&a.namespace, &b.namespace, &c.namespace], &map);
        assert_eq!(resolve(&a, &r).unwrap(), NodeId::new(2, "North.CO"));
        assert_eq!(resolve(&b, &r).unwrap(), NodeId::new(3, 7u32));
        assert!(resolve(&c, &r).unwrap_err().contains("urn:missing"));
        // Another server orders its namespaces differently.
        let mut other = NamespaceMap::new();
        other.add_namespace("urn:tunnel");
        let r2 = resolution([&a.namespace], &other);
        assert_eq!(resolve(&a, &r2).unwrap(), NodeId::new(1, "North.CO"));
        assert_ne!(r.get("urn:tunnel"), r2.get("urn:tunnel"));
    }

    /// An index in use must keep its URI; namespaces appended after it do
    /// not matter, one inserted before it does (a browse path's node may
    /// live in a namespace no configured URI names).
    #[test]
    fn indexes_in_use_keep_their_uris_or_count_as_moved() {
        let map = |uris: &[&str]| {
            let mut m = NamespaceMap::new();
            for u in uris {
                m.add_namespace(u);
            }
            m
        };
        let before = map(&["urn:di", "urn:vendor:instances"]);
        let in_use = index_uris([2, 7], &before);
        assert_eq!(in_use[&2].as_deref(), Some("urn:vendor:instances"));
        assert_eq!(in_use[&7], None);
        let appended = map(&["urn:di", "urn:vendor:instances", "urn:plugin"]);
        assert_eq!(index_uris([2, 7], &appended), in_use);
        let inserted = map(&["urn:plugin", "urn:di", "urn:vendor:instances"]);
        assert_ne!(index_uris([2, 7], &inserted), in_use);
    }
}
