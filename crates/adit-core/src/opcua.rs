//! OPC UA node references as written in config, pure: `ns=2;s=Tunnel.CO`
//! (namespace by index), `nsu=urn:site:tunnel;i=1001` (namespace by URI,
//! resolved against each server's namespace array at connect and after
//! every reconnect), and the four identifier kinds (`i=` numeric, `s=`
//! string, `g=` GUID, `b=` opaque base64). No namespace prefix means 0.
//! A point may instead name a browse path from a root node: browse names
//! in one namespace (given by URI), `0:Name` for the standard namespace.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Namespace {
    Index(u16),
    Uri(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identifier {
    Numeric(u32),
    String(String),
    /// Canonical lower-case `8-4-4-4-12` hex.
    Guid(String),
    /// Base64 as written.
    Opaque(String),
}

/// A node as configured, before its namespace is resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeRef {
    pub namespace: Namespace,
    pub identifier: Identifier,
}

impl NodeRef {
    /// Parses `[ns=N;|nsu=URI;](i|s|g|b)=ID`.
    pub fn parse(text: &str) -> Result<NodeRef, String> {
        let bad = |why: &str| {
            Err(format!(
                "{text:?}: {why}; expected e.g. \"ns=2;s=Tunnel.North.CO\" or \"nsu=urn:site:tunnel;i=1001\""
            ))
        };
        let (namespace, id) = if let Some(rest) = text.strip_prefix("nsu=") {
            // A URI may hold ';': the identifier starts at the first ";x=".
            let Some(at) = ["i=", "s=", "g=", "b="]
                .iter()
                .filter_map(|k| rest.find(&format!(";{k}")))
                .min()
            else {
                return bad("no identifier after the namespace URI");
            };
            if at == 0 {
                return bad("the namespace URI is empty");
            }
            (Namespace::Uri(rest[..at].to_string()), &rest[at + 1..])
        } else if let Some(rest) = text.strip_prefix("ns=") {
            let Some((index, id)) = rest.split_once(';') else {
                return bad("no identifier after the namespace index");
            };
            match index.parse::<u16>() {
                Ok(i) => (Namespace::Index(i), id),
                Err(_) => return bad("the namespace index is not a number 0-65535"),
            }
        } else {
            (Namespace::Index(0), text)
        };
        let identifier = if let Some(v) = id.strip_prefix("i=") {
            match v.parse::<u32>() {
                Ok(n) => Identifier::Numeric(n),
                Err(_) => return bad("a numeric identifier is a number 0-4294967295"),
            }
        } else if let Some(v) = id.strip_prefix("s=") {
            if v.is_empty() {
                return bad("the string identifier is empty");
            }
            Identifier::String(v.to_string())
        } else if let Some(v) = id.strip_prefix("g=") {
            if !is_guid(v) {
                return bad("a GUID identifier is 8-4-4-4-12 hex digits");
            }
            Identifier::Guid(v.to_ascii_lowercase())
        } else if let Some(v) = id.strip_prefix("b=") {
            let ok = !v.is_empty()
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
            if !ok {
                return bad("an opaque identifier is base64");
            }
            Identifier::Opaque(v.to_string())
        } else {
            return bad("the identifier must start with i=, s=, g= or b=");
        };
        Ok(NodeRef {
            namespace,
            identifier,
        })
    }
}

/// One step of a browse path: a browse name in a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrowseName {
    pub namespace: Namespace,
    pub name: String,
}

impl BrowseName {
    /// `Name` (in `default`), or `N:Name` with an explicit namespace index.
    pub fn parse(text: &str, default: &Namespace) -> Result<BrowseName, String> {
        let (namespace, name) = match text.split_once(':') {
            Some((index, name))
                if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let i = index.parse::<u16>().map_err(|_| {
                    format!("{text:?}: the namespace index is not a number 0-65535")
                })?;
                (Namespace::Index(i), name)
            }
            _ => (default.clone(), text),
        };
        if name.is_empty() {
            return Err(format!("{text:?}: a browse name is not empty"));
        }
        Ok(BrowseName {
            namespace,
            name: name.to_string(),
        })
    }
}

/// Where a point is: a node, or a browse path from a root node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeTarget {
    Node(NodeRef),
    Path {
        root: NodeRef,
        path: Vec<BrowseName>,
    },
}

impl NodeTarget {
    /// Every namespace the target names (to resolve by URI).
    pub fn namespaces(&self) -> Vec<&Namespace> {
        match self {
            NodeTarget::Node(n) => vec![&n.namespace],
            NodeTarget::Path { root, path } => std::iter::once(&root.namespace)
                .chain(path.iter().map(|b| &b.namespace))
                .collect(),
        }
    }
}

impl fmt::Display for NodeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeTarget::Node(n) => write!(f, "{n}"),
            NodeTarget::Path { root, path } => {
                write!(f, "{root}")?;
                for b in path {
                    match &b.namespace {
                        Namespace::Index(i) => write!(f, "/{i}:{}", b.name)?,
                        Namespace::Uri(u) => write!(f, "/<{u}>{}", b.name)?,
                    }
                }
                Ok(())
            }
        }
    }
}

fn is_guid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Namespace::Index(0) => {}
            Namespace::Index(i) => write!(f, "ns={i};")?,
            Namespace::Uri(u) => write!(f, "nsu={u};")?,
        }
        match &self.identifier {
            Identifier::Numeric(n) => write!(f, "i={n}"),
            Identifier::String(s) => write!(f, "s={s}"),
            Identifier::Guid(g) => write!(f, "g={g}"),
            Identifier::Opaque(b) => write!(f, "b={b}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_references_parse_and_print_back() {
        for (text, ns, id) in [
            (
                "ns=2;s=Tunnel.North.CO",
                Namespace::Index(2),
                Identifier::String("Tunnel.North.CO".into()),
            ),
            ("i=2258", Namespace::Index(0), Identifier::Numeric(2258)),
            (
                "nsu=urn:adit:sim;tunnel;s=A;B",
                Namespace::Uri("urn:adit:sim;tunnel".into()),
                Identifier::String("A;B".into()),
            ),
            (
                "nsu=http://x/UA/;i=7",
                Namespace::Uri("http://x/UA/".into()),
                Identifier::Numeric(7),
            ),
            (
                "ns=1;g=09087E75-8E5E-499B-954F-F2A9603DB28A",
                Namespace::Index(1),
                Identifier::Guid("09087e75-8e5e-499b-954f-f2a9603db28a".into()),
            ),
            (
                "ns=3;b=M/RbKBsRVkePCePcx24oRA==",
                Namespace::Index(3),
                Identifier::Opaque("M/RbKBsRVkePCePcx24oRA==".into()),
            ),
        ] {
            let n = NodeRef::parse(text).unwrap();
            assert_eq!(n.namespace, ns, "{text}");
            assert_eq!(n.identifier, id, "{text}");
            assert_eq!(NodeRef::parse(&n.to_string()).unwrap(), n, "{text}");
        }
    }

    #[test]
    fn browse_names_take_the_default_namespace_or_an_index() {
        let uri = Namespace::Uri("urn:t".into());
        let b = BrowseName::parse("North", &uri).unwrap();
        assert_eq!(b.namespace, uri);
        let b = BrowseName::parse("0:Objects", &uri).unwrap();
        assert_eq!(
            (b.namespace, b.name.as_str()),
            (Namespace::Index(0), "Objects")
        );
        let b = BrowseName::parse("Pump:1", &uri).unwrap();
        assert_eq!(b.name, "Pump:1");
        assert!(BrowseName::parse("", &uri).is_err());
        assert!(BrowseName::parse("2:", &uri).is_err());
    }

    #[test]
    fn malformed_node_references_say_what_is_wrong() {
        for (text, why) in [
            ("ns=2", "no identifier"),
            ("ns=x;i=1", "namespace index"),
            ("ns=70000;i=1", "namespace index"),
            ("i=-1", "numeric"),
            ("s=", "empty"),
            ("g=1234", "GUID"),
            ("b=!!", "base64"),
            ("Tunnel.CO", "must start with"),
            ("nsu=;s=x", "URI is empty"),
            ("nsu=urn:x", "no identifier"),
        ] {
            let e = NodeRef::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
