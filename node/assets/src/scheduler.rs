//! The sans-I/O scheduler: assets, what leases reserve on them, and the
//! decision that turns a lease request into a placement.
//!
//! **Filter, then score** (kube-scheduler's shape). For each item of a
//! request, in request order, the candidates are the assets of its kind
//! that are not withdrawn, whose privacy admits the tenant at a level no
//! wider than the request accepts, that satisfy every constraint and have
//! the amount free. The cheapest wins, then the tightest fit (least left
//! free, so large assets stay whole for large requests), then the lowest
//! asset id: the same state and request always give the same placement on
//! every node. Items are placed greedily in the order given; when that
//! fails, once more largest first (a small item can take the one asset a
//! large one needed). A colocated request is placed whole on each node
//! that holds a candidate for its first item, and the cheapest complete
//! node wins (the lowest node id among equals).
//!
//! **Atomic.** [`Scheduler::place`] reads only; [`Scheduler::reserve`]
//! takes a whole placement or nothing. It checks only that the placement
//! still fits (the assets exist, are offered, have the amounts free): the
//! filters are `place`'s, and every replica computes the placement itself
//! from the same state, never taking one from a transaction. Reserve and
//! [`Scheduler::release`] are idempotent, so a replayed block or a retried
//! call changes nothing twice. What is reserved on an asset never exceeds
//! its capacity ([`Scheduler::check`] verifies it against the leases).
//!
//! A request that cannot be met gets [`Unmet`]: which item, which filter
//! left no asset, how many assets each filter kept, and the largest free
//! amount seen, so the tenant knows what to change.

use std::collections::{BTreeMap, BTreeSet};

use hm_wire::Hash;
use serde::{Deserialize, Serialize};

use crate::model::{
    Asset, AssetError, AssetId, AssetKind, GANG_ITEMS_MAX, LeaseRequest, NodeId, PrivacyLevel,
    RequestItem, Standing, Tenant,
};

/// A lease's identity (the chain derives it from the request transaction).
pub type LeaseId = Hash;

/// Assets one scheduler holds.
pub const ASSETS_MAX: usize = 1 << 20;
/// Leases one scheduler holds.
pub const LEASES_MAX: usize = 1 << 22;

/// One item of a placement: `amount` units of `asset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub asset: AssetId,
    pub amount: u64,
}

/// Where a request's items go: one part per item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub parts: Vec<Part>,
    /// The whole lease, micro-credits per hour.
    pub cost_per_hour: u64,
}

/// The filters a candidate passes, in the order they are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Filter {
    /// Assets of the item's kind.
    Kind,
    /// Not withdrawn (a withdrawn asset only serves the leases it has).
    Offered,
    /// Its privacy admits the tenant, at a level the request accepts.
    Privacy,
    /// It satisfies the item's constraint of this index.
    Constraint(u8),
    /// The amount is free (after this request's earlier items).
    Capacity,
}

/// Why a request cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    #[error("the request is malformed: {0}")]
    Malformed(#[from] AssetError),
    #[error("{}", no_asset_text(.item, .kind, .amount, .filter, .kept, .largest_free, .detail))]
    NoAsset {
        /// Index of the item in the request.
        item: usize,
        kind: AssetKind,
        amount: u64,
        /// The filter that left no candidate.
        filter: Filter,
        /// Candidates kept after each filter applied, in order.
        kept: Vec<(Filter, usize)>,
        /// The most free units among the assets that passed every filter
        /// but capacity.
        largest_free: u64,
        /// The failing filter in words (a constraint's text, the privacy
        /// asked for).
        detail: String,
    },
    #[error(
        "every item fits, but no single node holds them all ({nodes_tried} nodes tried); drop `colocate` or ask for less"
    )]
    NotColocated { nodes_tried: usize },
    #[error(
        "the placement found costs {cheapest_per_hour} per hour, more than the {max_per_hour} allowed; raise the price or ask for less"
    )]
    TooExpensive {
        cheapest_per_hour: u64,
        max_per_hour: u64,
    },
}

fn no_asset_text(
    item: &usize,
    kind: &AssetKind,
    amount: &u64,
    filter: &Filter,
    kept: &[(Filter, usize)],
    largest_free: &u64,
    detail: &str,
) -> String {
    let counts: Vec<String> = kept
        .iter()
        .map(|(filter, count)| format!("{} {count}", filter_name(*filter)))
        .collect();
    let mut text = format!(
        "item {item} ({amount} {} of {kind}): no asset left after the {} filter ({detail}); assets kept: {}",
        kind.unit(),
        filter_name(*filter),
        counts.join(", ")
    );
    if *filter == Filter::Capacity {
        text.push_str(&format!(
            "; the largest free is {largest_free} {}",
            kind.unit()
        ));
    }
    text
}

fn filter_name(filter: Filter) -> String {
    match filter {
        Filter::Kind => "kind".into(),
        Filter::Offered => "offered".into(),
        Filter::Privacy => "privacy".into(),
        Filter::Constraint(index) => format!("constraint {index}"),
        Filter::Capacity => "capacity".into(),
    }
}

/// Why a placement cannot be reserved (it was decided on another state).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    #[error("lease {lease} already holds another placement; release it first")]
    LeaseExists { lease: LeaseId },
    #[error("asset {asset} is unknown or withdrawn; place the request again")]
    NoAsset { asset: AssetId },
    #[error(
        "asset {asset} has {free} units free, the placement asks {asked}; place the request again"
    )]
    Capacity {
        asset: AssetId,
        asked: u64,
        free: u64,
    },
    #[error(
        "a placement has 1 to {GANG_ITEMS_MAX} parts of at least one unit each; place the request again"
    )]
    BadParts,
    #[error("{LEASES_MAX} leases are held; release some first")]
    Full,
}

/// What `reserve` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    New,
    /// The same lease with the same placement was reserved before.
    Already,
}

/// Why an asset cannot be registered, updated or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("asset is malformed: {0}")]
    Malformed(#[from] AssetError),
    #[error("asset {asset} is already registered; update it instead")]
    Exists { asset: AssetId },
    #[error("asset {asset} is withdrawn and still holds leases; update it to offer it again")]
    Draining { asset: AssetId },
    #[error("asset {asset} is not registered; register it first")]
    Unknown { asset: AssetId },
    #[error("an update may not change an asset's {what}; withdraw it and register a new one")]
    Immutable { what: &'static str },
    #[error(
        "asset {asset} has {reserved} units reserved, more than the new capacity {capacity}; wait for leases to end"
    )]
    BelowReserved {
        asset: AssetId,
        reserved: u64,
        capacity: u64,
    },
    #[error("{ASSETS_MAX} assets are registered; withdraw some first")]
    Full,
}

/// What `withdraw` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    Removed,
    /// Leases still hold it: it takes no new ones and goes when they end.
    Draining {
        reserved: u64,
    },
}

#[derive(Debug, Clone)]
struct Held {
    asset: Asset,
    reserved: u64,
    withdrawn: bool,
}

impl Held {
    fn free(&self) -> u64 {
        self.asset.capacity - self.reserved
    }
}

/// Assets and leases: see the module doc.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    /// Assets by kind, then id: a request's candidates are one range,
    /// scanned without a lookup per asset.
    by_kind: BTreeMap<AssetKind, BTreeMap<AssetId, Held>>,
    /// Each asset's kind, to find it by id.
    kinds: BTreeMap<AssetId, AssetKind>,
    /// Each node's assets by kind (a colocated request scans one node's).
    by_node: BTreeMap<NodeId, BTreeSet<(AssetKind, AssetId)>>,
    leases: BTreeMap<LeaseId, Placement>,
}

/// Which assets an item may be placed on.
#[derive(Clone, Copy)]
enum Scope<'a> {
    Everywhere,
    Node(&'a BTreeSet<(AssetKind, AssetId)>),
}

impl Scheduler {
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    pub fn asset(&self, id: &AssetId) -> Option<&Asset> {
        self.held(id).map(|held| &held.asset)
    }

    /// Units of `id` reserved by leases.
    pub fn reserved(&self, id: &AssetId) -> Option<u64> {
        self.held(id).map(|held| held.reserved)
    }

    pub fn is_withdrawn(&self, id: &AssetId) -> bool {
        self.held(id).is_some_and(|held| held.withdrawn)
    }

    pub fn lease(&self, id: &LeaseId) -> Option<&Placement> {
        self.leases.get(id)
    }

    pub fn assets_len(&self) -> usize {
        self.kinds.len()
    }

    fn held(&self, id: &AssetId) -> Option<&Held> {
        self.by_kind.get(self.kinds.get(id)?)?.get(id)
    }

    fn held_mut(&mut self, id: &AssetId) -> Option<&mut Held> {
        self.by_kind.get_mut(self.kinds.get(id)?)?.get_mut(id)
    }

    pub fn leases_len(&self) -> usize {
        self.leases.len()
    }

    pub fn register(&mut self, asset: Asset) -> Result<(), SchedulerError> {
        asset.check()?;
        if let Some(held) = self.held(&asset.id) {
            return Err(if held.withdrawn {
                SchedulerError::Draining { asset: asset.id }
            } else {
                SchedulerError::Exists { asset: asset.id }
            });
        }
        if self.kinds.len() >= ASSETS_MAX {
            return Err(SchedulerError::Full);
        }
        self.by_node
            .entry(asset.node)
            .or_default()
            .insert((asset.kind, asset.id));
        self.kinds.insert(asset.id, asset.kind);
        self.by_kind.entry(asset.kind).or_default().insert(
            asset.id,
            Held {
                asset,
                reserved: 0,
                withdrawn: false,
            },
        );
        Ok(())
    }

    /// Replaces an asset's capacity, attributes, privacy or price; its
    /// owner, node and kind stay. Capacity may not drop below what leases
    /// hold. Leases already placed keep their terms. A withdrawn asset that
    /// still drains is offered again.
    pub fn update(&mut self, asset: Asset) -> Result<(), SchedulerError> {
        asset.check()?;
        let held = self
            .held_mut(&asset.id)
            .ok_or(SchedulerError::Unknown { asset: asset.id })?;
        for (what, same) in [
            ("owner", held.asset.owner == asset.owner),
            ("node", held.asset.node == asset.node),
            ("kind", held.asset.kind == asset.kind),
        ] {
            if !same {
                return Err(SchedulerError::Immutable { what });
            }
        }
        if asset.capacity < held.reserved {
            return Err(SchedulerError::BelowReserved {
                asset: asset.id,
                reserved: held.reserved,
                capacity: asset.capacity,
            });
        }
        held.asset = asset;
        held.withdrawn = false;
        Ok(())
    }

    /// Withdraws an asset: removed at once when no lease holds it,
    /// otherwise it takes no new leases and goes when the last one is
    /// released. Withdrawing twice is harmless.
    pub fn withdraw(&mut self, id: &AssetId) -> Result<Withdrawal, SchedulerError> {
        let held = self
            .held_mut(id)
            .ok_or(SchedulerError::Unknown { asset: *id })?;
        held.withdrawn = true;
        if held.reserved > 0 {
            return Ok(Withdrawal::Draining {
                reserved: held.reserved,
            });
        }
        self.remove(id);
        Ok(Withdrawal::Removed)
    }

    fn remove(&mut self, id: &AssetId) {
        let Some(kind) = self.kinds.remove(id) else {
            return;
        };
        let Some(held) = self.by_kind.get_mut(&kind).and_then(|held| held.remove(id)) else {
            return;
        };
        if self.by_kind.get(&kind).is_some_and(BTreeMap::is_empty) {
            self.by_kind.remove(&kind);
        }
        if let Some(set) = self.by_node.get_mut(&held.asset.node) {
            set.remove(&(kind, *id));
            if set.is_empty() {
                self.by_node.remove(&held.asset.node);
            }
        }
    }

    /// Decides where `request` goes for `tenant`, without reserving it.
    pub fn place(&self, request: &LeaseRequest, tenant: &Tenant) -> Result<Placement, Unmet> {
        request.check()?;
        if request.tenant != tenant.id {
            return Err(Unmet::Malformed(AssetError::WrongTenant {
                named: request.tenant,
                asking: tenant.id,
            }));
        }
        let placement = if request.colocate {
            self.place_colocated(request, tenant)?
        } else {
            self.place_gang(request, tenant, Scope::Everywhere)?
        };
        if placement.cost_per_hour > request.max_price_per_hour {
            return Err(Unmet::TooExpensive {
                cheapest_per_hour: placement.cost_per_hour,
                max_per_hour: request.max_price_per_hour,
            });
        }
        Ok(placement)
    }

    fn place_colocated(&self, request: &LeaseRequest, tenant: &Tenant) -> Result<Placement, Unmet> {
        // Nodes holding a candidate for the first item (with nothing else
        // taken): each is tried whole.
        let first = &request.items[0];
        let taken = BTreeMap::new();
        let nodes: BTreeSet<NodeId> = self
            .candidates(first, request, tenant, &taken, Scope::Everywhere)
            .map(|(held, _)| held.asset.node)
            .collect();
        if nodes.is_empty() {
            // The first item fits nowhere: say why.
            return Err(self.explain(0, request, tenant, &taken, Scope::Everywhere));
        }
        let best = nodes
            .iter()
            .filter_map(|node| {
                let on_node = self.by_node.get(node)?;
                self.place_gang(request, tenant, Scope::Node(on_node)).ok()
            })
            .min_by_key(|placement| placement.cost_per_hour);
        match best {
            Some(placement) => Ok(placement),
            None => {
                // Does every item fit somewhere at all? Then colocation is
                // what fails; otherwise name the item that fits nowhere.
                self.place_gang(request, tenant, Scope::Everywhere)?;
                Err(Unmet::NotColocated {
                    nodes_tried: nodes.len(),
                })
            }
        }
    }

    /// Places every item within `scope`: greedily in request order, then,
    /// if that fails, largest first; the first failure is the one told.
    fn place_gang(
        &self,
        request: &LeaseRequest,
        tenant: &Tenant,
        scope: Scope<'_>,
    ) -> Result<Placement, Unmet> {
        let in_order: Vec<usize> = (0..request.items.len()).collect();
        let unmet = match self.place_in(request, tenant, scope, &in_order) {
            Ok(placement) => return Ok(placement),
            Err(unmet) => unmet,
        };
        let mut largest_first = in_order.clone();
        largest_first.sort_by_key(|at| std::cmp::Reverse(request.items[*at].amount));
        if largest_first != in_order
            && let Ok(placement) = self.place_in(request, tenant, scope, &largest_first)
        {
            return Ok(placement);
        }
        Err(unmet)
    }

    /// Places the items in `order` within `scope`, each on the best
    /// candidate left after the ones before it; parts come back in request
    /// order.
    fn place_in(
        &self,
        request: &LeaseRequest,
        tenant: &Tenant,
        scope: Scope<'_>,
        order: &[usize],
    ) -> Result<Placement, Unmet> {
        let mut taken: BTreeMap<AssetId, u64> = BTreeMap::new();
        let mut parts: Vec<Option<Part>> = vec![None; request.items.len()];
        // `None` once the sum no longer fits a u64.
        let mut cost_per_hour = Some(0u64);
        for &index in order {
            let item = &request.items[index];
            let best = self
                .candidates(item, request, tenant, &taken, scope)
                .map(|(held, left)| {
                    let cost = held.asset.cost_per_hour(item.amount);
                    let score = (cost.unwrap_or(u64::MAX), left - item.amount, held.asset.id);
                    (score, cost)
                })
                .min_by_key(|(score, _)| *score);
            let Some(((_, _, asset), cost)) = best else {
                return Err(self.explain(index, request, tenant, &taken, scope));
            };
            *taken.entry(asset).or_default() += item.amount;
            cost_per_hour = cost_per_hour
                .zip(cost)
                .and_then(|(total, cost)| total.checked_add(cost));
            parts[index] = Some(Part {
                asset,
                amount: item.amount,
            });
        }
        let Some(cost_per_hour) = cost_per_hour else {
            return Err(Unmet::TooExpensive {
                cheapest_per_hour: u64::MAX,
                max_per_hour: request.max_price_per_hour,
            });
        };
        debug_assert!(parts.iter().all(Option::is_some), "every item placed");
        Ok(Placement {
            parts: parts.into_iter().flatten().collect(),
            cost_per_hour,
        })
    }

    /// The assets of `kind` within `scope`.
    fn in_scope<'a>(
        &'a self,
        kind: AssetKind,
        scope: Scope<'a>,
    ) -> Box<dyn Iterator<Item = &'a Held> + 'a> {
        match scope {
            Scope::Everywhere => Box::new(
                self.by_kind
                    .get(&kind)
                    .into_iter()
                    .flat_map(BTreeMap::values),
            ),
            Scope::Node(on_node) => {
                let of_kind = self.by_kind.get(&kind);
                Box::new(
                    on_node
                        .range((kind, Hash::ZERO)..=(kind, Hash([u8::MAX; 32])))
                        .filter_map(move |(_, id)| of_kind?.get(id)),
                )
            }
        }
    }

    /// Assets passing every filter for `item`, each with the units it has
    /// left after `taken`.
    fn candidates<'a>(
        &'a self,
        item: &'a RequestItem,
        request: &'a LeaseRequest,
        tenant: &'a Tenant,
        taken: &'a BTreeMap<AssetId, u64>,
        scope: Scope<'a>,
    ) -> impl Iterator<Item = (&'a Held, u64)> + 'a {
        self.in_scope(item.kind, scope).filter_map(move |held| {
            let left = left_after(held, taken);
            let fits = held.asset.kind == item.kind
                && !held.withdrawn
                && left >= item.amount
                && admits(held, request.widest_privacy, tenant)
                && item
                    .constraints
                    .iter()
                    .all(|constraint| constraint.holds(&held.asset.attributes));
            fits.then_some((held, left))
        })
    }

    /// Why item `index` has no candidate: the filters applied one by one.
    fn explain(
        &self,
        index: usize,
        request: &LeaseRequest,
        tenant: &Tenant,
        taken: &BTreeMap<AssetId, u64>,
        scope: Scope<'_>,
    ) -> Unmet {
        let item = &request.items[index];
        let mut left: Vec<&Held> = self.in_scope(item.kind, scope).collect();
        let mut kept = vec![(Filter::Kind, left.len())];
        let no_asset =
            |filter: Filter, kept: Vec<(Filter, usize)>, largest_free, detail| Unmet::NoAsset {
                item: index,
                kind: item.kind,
                amount: item.amount,
                filter,
                kept,
                largest_free,
                detail,
            };
        if left.is_empty() {
            let detail = match scope {
                Scope::Everywhere => format!("no {} asset is registered", item.kind),
                Scope::Node(_) => format!("no {} asset on this node", item.kind),
            };
            return no_asset(Filter::Kind, kept, 0, detail);
        }
        left.retain(|held| !held.withdrawn);
        kept.push((Filter::Offered, left.len()));
        if left.is_empty() {
            return no_asset(Filter::Offered, kept, 0, "all are withdrawn".into());
        }
        left.retain(|held| admits(held, request.widest_privacy, tenant));
        kept.push((Filter::Privacy, left.len()));
        if left.is_empty() {
            let detail = if tenant.standing == Standing::Uncertified {
                "only an asset's owner leases without a certificate of this network; get one first"
                    .to_string()
            } else {
                format!(
                    "none admits this tenant at privacy {} or narrower",
                    request.widest_privacy
                )
            };
            return no_asset(Filter::Privacy, kept, 0, detail);
        }
        for (at, constraint) in item.constraints.iter().enumerate() {
            let filter = Filter::Constraint(u8::try_from(at).unwrap_or(u8::MAX));
            left.retain(|held| constraint.holds(&held.asset.attributes));
            kept.push((filter, left.len()));
            if left.is_empty() {
                return no_asset(filter, kept, 0, format!("`{constraint}`"));
            }
        }
        let largest_free = left
            .iter()
            .map(|held| left_after(held, taken))
            .max()
            .unwrap_or(0);
        let fitting = left
            .iter()
            .filter(|held| left_after(held, taken) >= item.amount)
            .count();
        kept.push((Filter::Capacity, fitting));
        debug_assert_eq!(fitting, 0, "explain is asked only when nothing fits");
        let detail = if taken.is_empty() {
            format!("{} {} asked", item.amount, item.kind.unit())
        } else {
            format!(
                "{} {} asked, with this request's earlier items placed",
                item.amount,
                item.kind.unit()
            )
        };
        no_asset(Filter::Capacity, kept, largest_free, detail)
    }

    /// Reserves a placement for `lease`: all of it or nothing.
    pub fn reserve(
        &mut self,
        lease: LeaseId,
        placement: &Placement,
    ) -> Result<Reserved, ReserveError> {
        if let Some(existing) = self.leases.get(&lease) {
            return if existing == placement {
                Ok(Reserved::Already)
            } else {
                Err(ReserveError::LeaseExists { lease })
            };
        }
        if placement.parts.is_empty()
            || placement.parts.len() > GANG_ITEMS_MAX
            || placement.parts.iter().any(|part| part.amount == 0)
        {
            return Err(ReserveError::BadParts);
        }
        if self.leases.len() >= LEASES_MAX {
            return Err(ReserveError::Full);
        }
        let mut asked: BTreeMap<AssetId, u64> = BTreeMap::new();
        for part in &placement.parts {
            let total = asked.entry(part.asset).or_default();
            // Past u64 is past any capacity (at most 2^62): refused below.
            *total = total.saturating_add(part.amount);
        }
        for (asset, amount) in &asked {
            let held = self
                .held(asset)
                .filter(|held| !held.withdrawn)
                .ok_or(ReserveError::NoAsset { asset: *asset })?;
            if *amount > held.free() {
                return Err(ReserveError::Capacity {
                    asset: *asset,
                    asked: *amount,
                    free: held.free(),
                });
            }
        }
        for (asset, amount) in asked {
            if let Some(held) = self.held_mut(&asset) {
                held.reserved += amount;
            }
        }
        self.leases.insert(lease, placement.clone());
        Ok(Reserved::New)
    }

    /// Releases a lease (expired, ended or cancelled); releasing an unknown
    /// or already released lease does nothing. Returns what it held.
    pub fn release(&mut self, lease: &LeaseId) -> Option<Placement> {
        let placement = self.leases.remove(lease)?;
        for part in &placement.parts {
            let Some(held) = self.held_mut(&part.asset) else {
                continue;
            };
            assert!(
                held.reserved >= part.amount,
                "asset {} releases {} but holds {}: reservations drifted from leases",
                part.asset,
                part.amount,
                held.reserved
            );
            held.reserved -= part.amount;
            if held.withdrawn && held.reserved == 0 {
                let id = part.asset;
                self.remove(&id);
            }
        }
        Some(placement)
    }

    /// Verifies the invariants: each asset's reserved units equal what its
    /// leases hold and never exceed its capacity; indexes name exactly the
    /// assets held; no withdrawn asset lingers without leases.
    pub fn check(&self) -> Result<(), String> {
        let mut held_by_leases: BTreeMap<AssetId, u64> = BTreeMap::new();
        for (lease, placement) in &self.leases {
            for part in &placement.parts {
                if !self.kinds.contains_key(&part.asset) {
                    return Err(format!("lease {lease} holds unknown asset {}", part.asset));
                }
                *held_by_leases.entry(part.asset).or_default() += part.amount;
            }
        }
        for (kind, assets) in &self.by_kind {
            if assets.is_empty() {
                return Err(format!("an empty {kind} index is kept"));
            }
        }
        for (id, held) in self.by_kind.values().flat_map(BTreeMap::iter) {
            let by_leases = held_by_leases.get(id).copied().unwrap_or(0);
            if held.reserved != by_leases {
                return Err(format!(
                    "asset {id}: {} reserved, but its leases hold {by_leases}",
                    held.reserved
                ));
            }
            if held.reserved > held.asset.capacity {
                return Err(format!(
                    "asset {id}: {} reserved is more than its capacity {}",
                    held.reserved, held.asset.capacity
                ));
            }
            if held.withdrawn && held.reserved == 0 {
                return Err(format!("asset {id} is withdrawn and free but still held"));
            }
            let indexed = self.kinds.get(id) == Some(&held.asset.kind)
                && self
                    .by_node
                    .get(&held.asset.node)
                    .is_some_and(|set| set.contains(&(held.asset.kind, *id)));
            if !indexed {
                return Err(format!("asset {id} is missing from an index"));
            }
        }
        let held: usize = self.by_kind.values().map(BTreeMap::len).sum();
        let by_node: usize = self.by_node.values().map(BTreeSet::len).sum();
        if held != self.kinds.len() || by_node != self.kinds.len() {
            return Err(format!(
                "indexes name {} and {by_node} assets, {held} are held",
                self.kinds.len()
            ));
        }
        Ok(())
    }
}

/// Units of `held` free after `taken` (this request's earlier items).
fn left_after(held: &Held, taken: &BTreeMap<AssetId, u64>) -> u64 {
    let taken = taken.get(&held.asset.id).copied().unwrap_or(0);
    debug_assert!(taken <= held.free(), "items take only what is free");
    held.free() - taken
}

/// Whether `held`'s privacy admits `tenant` at a level no wider than
/// `widest`. The tenant's own assets are always acceptable to it.
fn admits(held: &Held, widest: PrivacyLevel, tenant: &Tenant) -> bool {
    let asset = &held.asset;
    asset.privacy.admits(&asset.owner, tenant)
        && (asset.owner == tenant.id || asset.privacy.level() <= widest)
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
