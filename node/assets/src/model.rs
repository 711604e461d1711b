//! Assets and lease requests: what they hold, in which units, who may use
//! them, and the limits on every field (assets and requests arrive in
//! transactions and API calls: hostile bytes until checked).

use std::collections::{BTreeMap, BTreeSet};

use hm_wire::Hash;
use serde::{Deserialize, Serialize};

/// An asset's identity.
pub type AssetId = Hash;
/// The node that holds an asset (its provider's node id).
pub type NodeId = Hash;

/// Attributes one asset carries.
pub const ATTRIBUTES_MAX: usize = 32;
/// Bytes of one attribute key or value.
pub const ATTRIBUTE_BYTES_MAX: usize = 64;
/// Peers a `Privacy::Peers` asset lists.
pub const PEERS_MAX: usize = 256;
/// Items in one (gang) lease request.
pub const GANG_ITEMS_MAX: usize = 16;
/// Constraints on one item.
pub const CONSTRAINTS_PER_ITEM_MAX: usize = 16;
/// Values one `Constraint::OneOf` lists.
pub const ONE_OF_VALUES_MAX: usize = 16;
/// Constraints on all items of one request together (each is checked
/// against every asset of its item's kind: this bounds a request's work).
pub const CONSTRAINTS_PER_REQUEST_MAX: usize = 32;
/// The longest lease one request may ask for: 30 days (renewal extends it).
pub const LEASE_DURATION_MAX_MS: u64 = 30 * 24 * 3_600_000;
/// The largest capacity or amount, in units: 2^62 leaves room to add any
/// two without overflow.
pub const UNITS_MAX: u64 = 1 << 62;

/// What an asset is. Each kind counts capacity in one unit
/// ([`AssetKind::unit`]) and is priced per [`AssetKind::price_quantum`] of
/// it per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AssetKind {
    Cpu,
    Gpu,
    Memory,
    Storage,
    Network,
    Service,
}

impl AssetKind {
    pub const ALL: [AssetKind; 6] = [
        AssetKind::Cpu,
        AssetKind::Gpu,
        AssetKind::Memory,
        AssetKind::Storage,
        AssetKind::Network,
        AssetKind::Service,
    ];

    /// The unit capacity and amounts are counted in.
    pub fn unit(self) -> &'static str {
        match self {
            AssetKind::Cpu => "millicores",
            AssetKind::Gpu => "devices",
            AssetKind::Memory | AssetKind::Storage => "bytes",
            AssetKind::Network => "kbit/s",
            AssetKind::Service => "connections",
        }
    }

    /// How many units one price applies to: a core, a device, a GiB, a
    /// Mbit/s, a connection.
    pub fn price_quantum(self) -> u64 {
        match self {
            AssetKind::Cpu => 1_000,
            AssetKind::Gpu | AssetKind::Service => 1,
            AssetKind::Memory | AssetKind::Storage => 1 << 30,
            AssetKind::Network => 1_000,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AssetKind::Cpu => "cpu",
            AssetKind::Gpu => "gpu",
            AssetKind::Memory => "memory",
            AssetKind::Storage => "storage",
            AssetKind::Network => "network",
            AssetKind::Service => "service",
        }
    }
}

impl std::fmt::Display for AssetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How open an asset is, narrowest first (the seed's four levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PrivacyLevel {
    Private,
    Peers,
    Network,
    Public,
}

impl std::fmt::Display for PrivacyLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrivacyLevel::Private => "private",
            PrivacyLevel::Peers => "peers",
            PrivacyLevel::Network => "network",
            PrivacyLevel::Public => "public",
        })
    }
}

/// Who may lease an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Privacy {
    /// Only its owner's own workloads.
    Private,
    /// The listed identities (and the owner).
    Peers(BTreeSet<Hash>),
    /// Any certified member of this network.
    Network,
    /// Any certified member, and (once federation exists) members of
    /// federated networks.
    Public,
}

impl Privacy {
    pub fn level(&self) -> PrivacyLevel {
        match self {
            Privacy::Private => PrivacyLevel::Private,
            Privacy::Peers(_) => PrivacyLevel::Peers,
            Privacy::Network => PrivacyLevel::Network,
            Privacy::Public => PrivacyLevel::Public,
        }
    }

    /// Whether `tenant` may lease an asset of `owner` with this privacy.
    /// The owner always may; otherwise listed peers and network members
    /// must hold this network's certificate, public assets also admit
    /// members of federated networks, and nobody uncertified gets in (a
    /// Sybil costs a certificate).
    pub fn admits(&self, owner: &Hash, tenant: &Tenant) -> bool {
        if tenant.id == *owner {
            return true;
        }
        match self {
            Privacy::Private => false,
            Privacy::Peers(peers) => {
                tenant.standing == Standing::Member && peers.contains(&tenant.id)
            }
            Privacy::Network => tenant.standing == Standing::Member,
            Privacy::Public => matches!(tenant.standing, Standing::Member | Standing::Federated),
        }
    }
}

/// What the network knows of a tenant (the caller decides it: the
/// scheduler knows nothing of certificates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Holds a usable certificate of this network.
    Member,
    /// A certified member of a federated network.
    Federated,
    /// Neither.
    Uncertified,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    pub id: Hash,
    pub standing: Standing,
}

/// Free-form labels (model, features, region…): key → value.
pub type Attributes = BTreeMap<String, String>;

/// A condition on one attribute of an asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Constraint {
    /// The attribute is present with exactly this value.
    Equals { key: String, value: String },
    /// The attribute is present with one of these values.
    OneOf { key: String, values: Vec<String> },
    /// The attribute is a decimal number at least `min`.
    AtLeast { key: String, min: u64 },
    /// The attribute is present, whatever its value.
    Present { key: String },
}

impl Constraint {
    pub fn key(&self) -> &str {
        match self {
            Constraint::Equals { key, .. }
            | Constraint::OneOf { key, .. }
            | Constraint::AtLeast { key, .. }
            | Constraint::Present { key } => key,
        }
    }

    pub fn holds(&self, attributes: &Attributes) -> bool {
        let Some(value) = attributes.get(self.key()) else {
            return false;
        };
        match self {
            Constraint::Equals { value: wanted, .. } => value == wanted,
            Constraint::OneOf { values, .. } => values.iter().any(|wanted| wanted == value),
            Constraint::AtLeast { min, .. } => value.parse::<u64>().is_ok_and(|have| have >= *min),
            Constraint::Present { .. } => true,
        }
    }
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Constraint::Equals { key, value } => write!(f, "{key} = {value:?}"),
            Constraint::OneOf { key, values } => write!(f, "{key} in {values:?}"),
            Constraint::AtLeast { key, min } => write!(f, "{key} >= {min}"),
            Constraint::Present { key } => write!(f, "{key} present"),
        }
    }
}

/// One asset: owned by `owner`, held by node `node`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: AssetId,
    pub owner: Hash,
    pub node: NodeId,
    pub kind: AssetKind,
    /// In [`AssetKind::unit`]s.
    pub capacity: u64,
    pub attributes: Attributes,
    pub privacy: Privacy,
    /// Micro-credits per [`AssetKind::price_quantum`] units per hour.
    pub price_per_quantum_hour: u64,
}

/// Why an asset or a request is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    #[error("{what}: {len} is more than the limit of {max}")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is empty or zero; give it a value")]
    Empty { what: &'static str },
    #[error(
        "attribute {key:?}: keys are 1 to {ATTRIBUTE_BYTES_MAX} bytes, values at most {ATTRIBUTE_BYTES_MAX}"
    )]
    BadAttribute { key: String },
    #[error("{what} of {value} is more than the limit of {UNITS_MAX} units")]
    TooLarge { what: &'static str, value: u64 },
    #[error("`{key} in []` can never hold; list the values it may take")]
    EmptyOneOf { key: String },
    #[error("the request names tenant {named}, but {asking} asks; a tenant asks for itself")]
    WrongTenant { named: Hash, asking: Hash },
    #[error(
        "a lease of {duration_ms} ms is longer than the limit of {LEASE_DURATION_MAX_MS} ms; ask for less and renew"
    )]
    TooLong { duration_ms: u64 },
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), AssetError> {
    if len > max {
        return Err(AssetError::TooMany { what, len, max });
    }
    Ok(())
}

fn check_text(key: &str) -> Result<(), AssetError> {
    if key.is_empty() || key.len() > ATTRIBUTE_BYTES_MAX {
        return Err(AssetError::BadAttribute {
            key: key.chars().take(ATTRIBUTE_BYTES_MAX).collect(),
        });
    }
    Ok(())
}

/// An attribute or constraint value for `key`: at most
/// [`ATTRIBUTE_BYTES_MAX`] bytes (empty is a value).
fn check_value(key: &str, value: &str) -> Result<(), AssetError> {
    if value.len() > ATTRIBUTE_BYTES_MAX {
        return Err(AssetError::BadAttribute {
            key: key.chars().take(ATTRIBUTE_BYTES_MAX).collect(),
        });
    }
    Ok(())
}

impl Asset {
    /// Checks every limit.
    pub fn check(&self) -> Result<(), AssetError> {
        if self.capacity == 0 {
            return Err(AssetError::Empty { what: "capacity" });
        }
        if self.capacity > UNITS_MAX {
            return Err(AssetError::TooLarge {
                what: "capacity",
                value: self.capacity,
            });
        }
        limit("attributes", self.attributes.len(), ATTRIBUTES_MAX)?;
        for (key, value) in &self.attributes {
            check_text(key)?;
            check_value(key, value)?;
        }
        if let Privacy::Peers(peers) = &self.privacy {
            limit("peers", peers.len(), PEERS_MAX)?;
        }
        Ok(())
    }

    /// Micro-credits per hour for `amount` units, rounded up (never free
    /// by rounding); `None` when it does not fit in a u64.
    pub fn cost_per_hour(&self, amount: u64) -> Option<u64> {
        let quantum = u128::from(self.kind.price_quantum());
        let cost = (u128::from(amount) * u128::from(self.price_per_quantum_hour)).div_ceil(quantum);
        u64::try_from(cost).ok()
    }
}

/// One resource of a lease request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestItem {
    pub kind: AssetKind,
    /// In the kind's unit; placed on one asset.
    pub amount: u64,
    pub constraints: Vec<Constraint>,
}

/// What a tenant asks for: all of its items or none (a gang).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub tenant: Hash,
    pub items: Vec<RequestItem>,
    /// The most open privacy level the tenant accepts for its workload's
    /// assets (a tenant with sensitive data asks for `Peers` or `Private`).
    pub widest_privacy: PrivacyLevel,
    /// All items on one node.
    pub colocate: bool,
    /// The most the whole lease may cost, micro-credits per hour.
    pub max_price_per_hour: u64,
    pub duration_ms: u64,
}

impl LeaseRequest {
    /// Checks every limit.
    pub fn check(&self) -> Result<(), AssetError> {
        if self.items.is_empty() {
            return Err(AssetError::Empty { what: "items" });
        }
        limit("items", self.items.len(), GANG_ITEMS_MAX)?;
        if self.duration_ms == 0 {
            return Err(AssetError::Empty {
                what: "duration_ms",
            });
        }
        if self.duration_ms > LEASE_DURATION_MAX_MS {
            return Err(AssetError::TooLong {
                duration_ms: self.duration_ms,
            });
        }
        limit(
            "constraints in the request",
            self.items.iter().map(|item| item.constraints.len()).sum(),
            CONSTRAINTS_PER_REQUEST_MAX,
        )?;
        for item in &self.items {
            if item.amount == 0 {
                return Err(AssetError::Empty { what: "amount" });
            }
            if item.amount > UNITS_MAX {
                return Err(AssetError::TooLarge {
                    what: "amount",
                    value: item.amount,
                });
            }
            limit(
                "constraints",
                item.constraints.len(),
                CONSTRAINTS_PER_ITEM_MAX,
            )?;
            for constraint in &item.constraints {
                check_text(constraint.key())?;
                match constraint {
                    Constraint::Equals { key, value } => check_value(key, value)?,
                    Constraint::OneOf { key, values } => {
                        if values.is_empty() {
                            return Err(AssetError::EmptyOneOf { key: key.clone() });
                        }
                        limit("values", values.len(), ONE_OF_VALUES_MAX)?;
                        values
                            .iter()
                            .try_for_each(|value| check_value(key, value))?;
                    }
                    Constraint::AtLeast { .. } | Constraint::Present { .. } => {}
                }
            }
        }
        Ok(())
    }
}
