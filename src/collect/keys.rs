//! The keys every stage of collection shares: a namespace within a scope, an
//! image as detection tells images apart, and the key a row is stored and
//! deduplicated under.
//!
//! Place in the data flow: a leaf below the scheduler, the image table,
//! aggregation and detection, which all name images and namespaces the same
//! way; it depends on nothing but the row model.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::hss::RowRef;

/// A namespace within a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamespaceKey {
    /// Enterprise-edition instance name; empty for the other image types.
    pub instance_name: String,
    /// The registry (registry-images API); empty under swr-repository. Two
    /// Harbor registries can hold namespaces of the same name.
    #[serde(default)]
    pub registry_name: String,
    /// The namespace (SWR organisation).
    pub namespace: String,
}

/// One image version, as detection tells images apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageKey {
    /// Enterprise-edition instance name; empty otherwise.
    pub instance_name: String,
    /// The registry (registry-images API); empty otherwise.
    #[serde(default)]
    pub registry_name: String,
    /// Namespace.
    pub namespace: String,
    /// Image name.
    pub image: String,
    /// Version.
    pub version: String,
    /// Digest.
    pub digest: String,
}

impl ImageKey {
    /// The namespace the image lives in.
    pub fn namespace_key(&self) -> NamespaceKey {
        NamespaceKey {
            instance_name: self.instance_name.clone(),
            registry_name: self.registry_name.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

/// The detection key of a row.
pub fn image_key(row: &RowRef<'_>) -> ImageKey {
    ImageKey {
        instance_name: row.instance_name.into(),
        registry_name: row.registry_name.into(),
        namespace: row.namespace.into(),
        image: row.image_name.into(),
        version: row.image_version.into(),
        digest: row.image_digest.into(),
    }
}

/// Ids of rows without a readable id: a hash of what identifies the image,
/// with the top bit set (API ids are positive 63-bit numbers).
const COMPOSITE_BIT: u64 = 1 << 63;

/// The key a row is stored under: its id, else a hash of what identifies it.
pub fn row_key(row: &RowRef<'_>) -> u64 {
    match row.id {
        Some(id) => id & !COMPOSITE_BIT,
        None => {
            let mut hasher = DefaultHasher::new();
            (
                &row.namespace,
                &row.image_name,
                &row.image_version,
                &row.image_digest,
                &row.instance_id,
                &row.instance_name,
                &row.registry_name,
            )
                .hash(&mut hasher);
            hasher.finish() | COMPOSITE_BIT
        }
    }
}
