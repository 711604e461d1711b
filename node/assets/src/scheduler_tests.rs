//! The scheduler driven directly: hand-made cases for each filter and
//! reason, and property tests that run random markets against a
//! brute-force oracle and the invariants.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::model::{Attributes, Constraint, Privacy, Standing};

fn id(tag: &str, n: u64) -> Hash {
    hm_wire::hash_parts("hm/assets-test", &[tag.as_bytes(), &n.to_le_bytes()])
}

fn member(n: u64) -> Tenant {
    Tenant {
        id: id("tenant", n),
        standing: Standing::Member,
    }
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn asset(n: u64, node: u64, kind: AssetKind, capacity: u64, price: u64) -> Asset {
    Asset {
        id: id("asset", n),
        owner: id("owner", node),
        node: id("node", node),
        kind,
        capacity,
        attributes: Attributes::new(),
        privacy: Privacy::Network,
        price_per_quantum_hour: price,
    }
}

fn item(kind: AssetKind, amount: u64) -> RequestItem {
    RequestItem {
        kind,
        amount,
        constraints: Vec::new(),
    }
}

fn request(tenant: &Tenant, items: Vec<RequestItem>) -> LeaseRequest {
    LeaseRequest {
        tenant: tenant.id,
        items,
        widest_privacy: PrivacyLevel::Public,
        colocate: false,
        max_price_per_hour: u64::MAX,
        duration_ms: 3_600_000,
    }
}

const GIB: u64 = 1 << 30;

#[test]
fn the_cheapest_then_tightest_asset_wins_and_the_lease_is_reserved_once() {
    let mut scheduler = Scheduler::new();
    scheduler
        .register(asset(1, 1, AssetKind::Cpu, 8_000, 100))
        .expect("valid");
    scheduler
        .register(asset(2, 2, AssetKind::Cpu, 4_000, 100))
        .expect("valid");
    scheduler
        .register(asset(3, 3, AssetKind::Cpu, 16_000, 50))
        .expect("valid");
    let tenant = member(1);
    // Cheapest first: asset 3 at 50 per core-hour.
    let placed = scheduler
        .place(
            &request(&tenant, vec![item(AssetKind::Cpu, 2_000)]),
            &tenant,
        )
        .expect("fits");
    assert_eq!(placed.parts[0].asset, id("asset", 3));
    assert_eq!(placed.cost_per_hour, 100);
    // Withdrawn, the same price goes to the tightest fit: asset 2.
    scheduler.withdraw(&id("asset", 3)).expect("known");
    let placed = scheduler
        .place(
            &request(&tenant, vec![item(AssetKind::Cpu, 2_000)]),
            &tenant,
        )
        .expect("fits");
    assert_eq!(placed.parts[0].asset, id("asset", 2));

    let lease = id("lease", 1);
    assert_eq!(scheduler.reserve(lease, &placed), Ok(Reserved::New));
    assert_eq!(scheduler.reserve(lease, &placed), Ok(Reserved::Already));
    assert_eq!(scheduler.reserved(&id("asset", 2)), Some(2_000));
    let other = Placement {
        parts: vec![Part {
            asset: id("asset", 1),
            amount: 1,
        }],
        cost_per_hour: 1,
    };
    assert_eq!(
        scheduler.reserve(lease, &other),
        Err(ReserveError::LeaseExists { lease })
    );
    assert_eq!(scheduler.release(&lease), Some(placed));
    assert_eq!(scheduler.release(&lease), None);
    assert_eq!(scheduler.reserved(&id("asset", 2)), Some(0));
    scheduler.check().expect("invariants");
}

#[test]
fn a_gang_is_placed_whole_or_refused_with_the_item_and_filter_that_failed() {
    let mut scheduler = Scheduler::new();
    let mut gpu = asset(1, 1, AssetKind::Gpu, 2, 1_000);
    gpu.attributes = attrs(&[("model", "a100"), ("vram_gb", "80")]);
    scheduler.register(gpu).expect("valid");
    let mut small = asset(2, 2, AssetKind::Gpu, 4, 500);
    small.attributes = attrs(&[("model", "t4"), ("vram_gb", "16")]);
    scheduler.register(small).expect("valid");
    scheduler
        .register(asset(3, 1, AssetKind::Memory, 64 * GIB, 10))
        .expect("valid");
    let tenant = member(1);

    let mut big_gpu = item(AssetKind::Gpu, 2);
    big_gpu.constraints = vec![Constraint::AtLeast {
        key: "vram_gb".into(),
        min: 40,
    }];
    let gang = request(
        &tenant,
        vec![big_gpu.clone(), item(AssetKind::Memory, 32 * GIB)],
    );
    let placed = scheduler.place(&gang, &tenant).expect("fits");
    assert_eq!(
        placed.parts,
        vec![
            Part {
                asset: id("asset", 1),
                amount: 2
            },
            Part {
                asset: id("asset", 3),
                amount: 32 * GIB
            }
        ]
    );
    assert_eq!(placed.cost_per_hour, 2 * 1_000 + 32 * 10);
    scheduler.reserve(id("lease", 1), &placed).expect("fits");

    // The same gang again: the big GPUs are taken, so item 0 fails at
    // capacity, naming the largest free amount.
    match scheduler.place(&gang, &tenant) {
        Err(Unmet::NoAsset {
            item: 0,
            filter: Filter::Capacity,
            largest_free: 0,
            kept,
            ..
        }) => assert_eq!(
            kept,
            vec![
                (Filter::Kind, 2),
                (Filter::Offered, 2),
                (Filter::Privacy, 2),
                (Filter::Constraint(0), 1),
                (Filter::Capacity, 0)
            ]
        ),
        other => panic!("expected a capacity refusal, got {other:?}"),
    }
    // A constraint nothing meets names itself.
    let mut h100 = item(AssetKind::Gpu, 1);
    h100.constraints = vec![Constraint::Equals {
        key: "model".into(),
        value: "h100".into(),
    }];
    let unmet = scheduler
        .place(&request(&tenant, vec![h100]), &tenant)
        .expect_err("no h100");
    assert!(unmet.to_string().contains("`model = \"h100\"`"), "{unmet}");
    // Memory fits alone, the second item of a gang fails after the first
    // took its share: the refusal says so, and nothing is reserved.
    let reserved_before = scheduler.reserved(&id("asset", 3));
    let two = request(
        &tenant,
        vec![
            item(AssetKind::Memory, 20 * GIB),
            item(AssetKind::Memory, 20 * GIB),
        ],
    );
    let unmet = scheduler.place(&two, &tenant).expect_err("32 GiB free");
    assert!(
        unmet.to_string().contains("earlier items placed"),
        "{unmet}"
    );
    assert_eq!(scheduler.reserved(&id("asset", 3)), reserved_before);
    // Too expensive: the cheapest placement's price is named.
    let mut pricey = request(&tenant, vec![item(AssetKind::Gpu, 1)]);
    pricey.max_price_per_hour = 499;
    assert_eq!(
        scheduler.place(&pricey, &tenant),
        Err(Unmet::TooExpensive {
            cheapest_per_hour: 500,
            max_per_hour: 499
        })
    );
    scheduler.check().expect("invariants");
}

#[test]
fn privacy_admits_the_owner_listed_peers_members_and_federated_tenants_as_its_level_says() {
    let owner = id("owner", 1);
    let peer = Tenant {
        id: id("tenant", 7),
        standing: Standing::Member,
    };
    let stranger = member(8);
    let federated = Tenant {
        id: id("tenant", 9),
        standing: Standing::Federated,
    };
    let uncertified = Tenant {
        id: id("tenant", 10),
        standing: Standing::Uncertified,
    };
    let self_tenant = Tenant {
        id: owner,
        standing: Standing::Uncertified,
    };
    let peers = Privacy::Peers(BTreeSet::from([peer.id]));
    let table = [
        (Privacy::Private, [true, false, false, false, false]),
        (peers, [true, true, false, false, false]),
        (Privacy::Network, [true, true, true, false, false]),
        (Privacy::Public, [true, true, true, true, false]),
    ];
    for (privacy, expected) in table {
        let got = [&self_tenant, &peer, &stranger, &federated, &uncertified]
            .map(|tenant| privacy.admits(&owner, tenant));
        assert_eq!(got, expected, "{privacy:?}");
    }

    // A request accepting at most P2P never lands on a network-wide asset.
    let mut scheduler = Scheduler::new();
    scheduler
        .register(asset(1, 1, AssetKind::Cpu, 1_000, 1))
        .expect("valid");
    let tenant = member(2);
    let mut careful = request(&tenant, vec![item(AssetKind::Cpu, 500)]);
    careful.widest_privacy = PrivacyLevel::Peers;
    match scheduler.place(&careful, &tenant) {
        Err(Unmet::NoAsset {
            filter: Filter::Privacy,
            ..
        }) => {}
        other => panic!("expected a privacy refusal, got {other:?}"),
    }
}

#[test]
fn colocated_gangs_land_on_one_node_or_say_no_node_holds_them_all() {
    let mut scheduler = Scheduler::new();
    scheduler
        .register(asset(1, 1, AssetKind::Cpu, 4_000, 10))
        .expect("valid");
    scheduler
        .register(asset(2, 2, AssetKind::Memory, 16 * GIB, 1))
        .expect("valid");
    scheduler
        .register(asset(3, 3, AssetKind::Cpu, 4_000, 30))
        .expect("valid");
    scheduler
        .register(asset(4, 3, AssetKind::Memory, 16 * GIB, 3))
        .expect("valid");
    let tenant = member(1);
    let mut gang = request(
        &tenant,
        vec![
            item(AssetKind::Cpu, 2_000),
            item(AssetKind::Memory, 8 * GIB),
        ],
    );
    // Apart, the cheapest pieces are on nodes 1 and 2.
    let apart = scheduler.place(&gang, &tenant).expect("fits");
    assert_eq!(
        apart
            .parts
            .iter()
            .map(|part| part.asset)
            .collect::<Vec<_>>(),
        vec![id("asset", 1), id("asset", 2)]
    );
    // Together, only node 3 holds both.
    gang.colocate = true;
    let together = scheduler.place(&gang, &tenant).expect("fits on node 3");
    assert_eq!(
        together
            .parts
            .iter()
            .map(|part| part.asset)
            .collect::<Vec<_>>(),
        vec![id("asset", 3), id("asset", 4)]
    );
    scheduler.reserve(id("lease", 1), &together).expect("fits");
    // Node 3's memory is now half taken; a gang needing 12 GiB fits only
    // apart.
    gang.items[1].amount = 12 * GIB;
    assert_eq!(
        scheduler.place(&gang, &tenant),
        Err(Unmet::NotColocated { nodes_tried: 2 })
    );
    scheduler.check().expect("invariants");
}

#[test]
fn assets_update_within_their_leases_and_withdraw_by_draining() {
    let mut scheduler = Scheduler::new();
    let cpu = asset(1, 1, AssetKind::Cpu, 4_000, 10);
    scheduler.register(cpu.clone()).expect("valid");
    assert_eq!(
        scheduler.register(cpu.clone()),
        Err(SchedulerError::Exists { asset: cpu.id })
    );
    let tenant = member(1);
    let placed = scheduler
        .place(
            &request(&tenant, vec![item(AssetKind::Cpu, 3_000)]),
            &tenant,
        )
        .expect("fits");
    scheduler.reserve(id("lease", 1), &placed).expect("fits");

    let shrunk = Asset {
        capacity: 2_000,
        ..cpu.clone()
    };
    assert!(matches!(
        scheduler.update(shrunk),
        Err(SchedulerError::BelowReserved {
            reserved: 3_000,
            ..
        })
    ));
    let moved = Asset {
        node: id("node", 9),
        ..cpu.clone()
    };
    assert_eq!(
        scheduler.update(moved),
        Err(SchedulerError::Immutable { what: "node" })
    );
    let cheaper = Asset {
        price_per_quantum_hour: 5,
        ..cpu.clone()
    };
    scheduler.update(cheaper).expect("price changes");

    assert_eq!(
        scheduler.withdraw(&cpu.id),
        Ok(Withdrawal::Draining { reserved: 3_000 })
    );
    // Draining: no new lease, the old one stays.
    assert!(matches!(
        scheduler.place(&request(&tenant, vec![item(AssetKind::Cpu, 500)]), &tenant),
        Err(Unmet::NoAsset {
            filter: Filter::Offered,
            ..
        })
    ));
    assert_eq!(
        scheduler.reserve(id("lease", 2), &placed),
        Err(ReserveError::NoAsset { asset: cpu.id })
    );
    scheduler.check().expect("invariants");
    // Registered again while draining: the owner is told to update it.
    assert_eq!(
        scheduler.register(cpu.clone()),
        Err(SchedulerError::Draining { asset: cpu.id })
    );
    // An update offers it again; withdrawn once more, it drains again.
    scheduler.update(cpu.clone()).expect("re-offered");
    assert!(!scheduler.is_withdrawn(&cpu.id));
    scheduler
        .place(&request(&tenant, vec![item(AssetKind::Cpu, 500)]), &tenant)
        .expect("offered again");
    assert_eq!(
        scheduler.withdraw(&cpu.id),
        Ok(Withdrawal::Draining { reserved: 3_000 })
    );
    // The last lease ends: the asset goes.
    scheduler.release(&id("lease", 1)).expect("held");
    assert!(scheduler.asset(&cpu.id).is_none());
    assert_eq!(
        scheduler.withdraw(&cpu.id),
        Err(SchedulerError::Unknown { asset: cpu.id })
    );
    scheduler.check().expect("invariants");
}

#[test]
fn a_gang_the_request_order_cannot_place_is_placed_largest_first() {
    let mut scheduler = Scheduler::new();
    scheduler
        .register(asset(1, 1, AssetKind::Cpu, 4_000, 1))
        .expect("valid");
    scheduler
        .register(asset(2, 2, AssetKind::Cpu, 2_000, 2))
        .expect("valid");
    let tenant = member(1);
    // In order, the small item takes the cheap large asset and the large
    // item finds nothing; largest first, both fit.
    let gang = request(
        &tenant,
        vec![item(AssetKind::Cpu, 2_000), item(AssetKind::Cpu, 4_000)],
    );
    let placed = scheduler.place(&gang, &tenant).expect("fits largest first");
    assert_eq!(
        placed.parts,
        vec![
            Part {
                asset: id("asset", 2),
                amount: 2_000
            },
            Part {
                asset: id("asset", 1),
                amount: 4_000
            }
        ]
    );
    // Three items that fit in no order: the request-order failure is told.
    let mut three = gang.clone();
    three.items.push(item(AssetKind::Cpu, 1_000));
    match scheduler.place(&three, &tenant) {
        Err(Unmet::NoAsset {
            item: 1,
            filter: Filter::Capacity,
            ..
        }) => {}
        other => panic!("expected item 1 refused at capacity, got {other:?}"),
    }
}

#[test]
fn placements_are_checked_whole_bounded_and_without_overflow() {
    let mut scheduler = Scheduler::new();
    let mut huge = asset(1, 1, AssetKind::Storage, crate::model::UNITS_MAX, 1);
    scheduler.register(huge.clone()).expect("valid");
    scheduler
        .register(asset(2, 2, AssetKind::Cpu, 1_000, 1))
        .expect("valid");
    let part = |n: u64, amount: u64| Part {
        asset: id("asset", n),
        amount,
    };
    let placement = |parts: Vec<Part>| Placement {
        parts,
        cost_per_hour: 0,
    };
    // Two parts on one asset whose sum passes its capacity (and u64).
    assert!(matches!(
        scheduler.reserve(
            id("lease", 1),
            &placement(vec![part(1, crate::model::UNITS_MAX), part(1, u64::MAX)])
        ),
        Err(ReserveError::Capacity { .. })
    ));
    // Atomic across assets: the CPU part fits, the storage part does not.
    assert!(matches!(
        scheduler.reserve(
            id("lease", 1),
            &placement(vec![part(2, 500), part(1, crate::model::UNITS_MAX + 1)])
        ),
        Err(ReserveError::Capacity { .. })
    ));
    assert_eq!(scheduler.reserved(&id("asset", 2)), Some(0));
    for bad in [
        Vec::new(),
        vec![part(2, 0)],
        (0..17).map(|_| part(2, 1)).collect(),
    ] {
        assert_eq!(
            scheduler.reserve(id("lease", 2), &placement(bad)),
            Err(ReserveError::BadParts)
        );
    }
    assert_eq!(scheduler.leases_len(), 0);
    scheduler.check().expect("invariants");
    // A price whose cost passes u64 is refused as too expensive, even with
    // no price limit.
    huge.id = id("asset", 3);
    huge.price_per_quantum_hour = u64::MAX;
    let mut pricey = Scheduler::new();
    pricey.register(huge).expect("valid");
    let tenant = member(1);
    let all = request(
        &tenant,
        vec![item(AssetKind::Storage, crate::model::UNITS_MAX)],
    );
    assert!(matches!(
        pricey.place(&all, &tenant),
        Err(Unmet::TooExpensive {
            cheapest_per_hour: u64::MAX,
            ..
        })
    ));
}

#[test]
fn malformed_requests_and_assets_are_refused_with_what_is_wrong() {
    let tenant = member(1);
    let scheduler = Scheduler::new();
    let empty = request(&tenant, Vec::new());
    assert!(matches!(
        scheduler.place(&empty, &tenant),
        Err(Unmet::Malformed(AssetError::Empty { what: "items" }))
    ));
    let many = request(&tenant, vec![item(AssetKind::Cpu, 1); 17]);
    assert!(matches!(
        scheduler.place(&many, &tenant),
        Err(Unmet::Malformed(AssetError::TooMany { what: "items", .. }))
    ));
    let mut long = request(&tenant, vec![item(AssetKind::Cpu, 1)]);
    long.duration_ms = crate::model::LEASE_DURATION_MAX_MS + 1;
    assert!(
        scheduler
            .place(&long, &tenant)
            .expect_err("too long")
            .to_string()
            .contains("renew")
    );
    let malformed = |change: &dyn Fn(&mut LeaseRequest)| {
        let mut bad = request(&tenant, vec![item(AssetKind::Cpu, 1)]);
        change(&mut bad);
        match scheduler.place(&bad, &tenant) {
            Err(Unmet::Malformed(error)) => error,
            other => panic!("expected malformed, got {other:?}"),
        }
    };
    assert_eq!(
        malformed(&|r| r.duration_ms = 0),
        AssetError::Empty {
            what: "duration_ms"
        }
    );
    assert_eq!(
        malformed(&|r| r.items[0].amount = 0),
        AssetError::Empty { what: "amount" }
    );
    assert!(matches!(
        malformed(&|r| r.items[0].amount = u64::MAX),
        AssetError::TooLarge { .. }
    ));
    assert!(matches!(
        malformed(&|r| r.items[0].constraints = vec![Constraint::OneOf {
            key: "model".into(),
            values: Vec::new()
        }]),
        AssetError::EmptyOneOf { .. }
    ));
    assert!(matches!(
        malformed(&|r| r.items[0].constraints = vec![Constraint::Present {
            key: "k".repeat(65)
        }]),
        AssetError::BadAttribute { .. }
    ));
    assert!(matches!(
        malformed(&|r| {
            let present = Constraint::Present { key: "k".into() };
            r.items = vec![
                RequestItem {
                    constraints: vec![present.clone(); 16],
                    ..item(AssetKind::Cpu, 1)
                };
                3
            ];
        }),
        AssetError::TooMany {
            what: "constraints in the request",
            ..
        }
    ));
    assert!(matches!(
        malformed(&|r| r.tenant = id("tenant", 99)),
        AssetError::WrongTenant { .. }
    ));
    let mut zero = asset(1, 1, AssetKind::Cpu, 0, 1);
    let mut fresh = Scheduler::new();
    assert!(matches!(
        fresh.register(zero.clone()),
        Err(SchedulerError::Malformed(AssetError::Empty { .. }))
    ));
    zero.capacity = 1;
    zero.attributes = (0..33).map(|n| (format!("k{n}"), "v".into())).collect();
    assert!(matches!(
        fresh.register(zero),
        Err(SchedulerError::Malformed(AssetError::TooMany { .. }))
    ));
}

// ------------------------------------------------------------ properties

/// A random market: a few nodes, assets of every kind with a model label
/// and a size, random privacy; tenants of every standing.
fn market() -> impl Strategy<Value = Vec<Asset>> {
    prop::collection::vec(
        (
            0u64..6,
            0usize..6,
            1u64..64,
            0u64..50,
            0u8..4,
            0u8..3,
            prop::collection::btree_set(0u64..4, 0..3),
        ),
        1..40,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(
                |(n, (node, kind, capacity, price, privacy, model, peers))| Asset {
                    id: id("asset", n as u64),
                    owner: id("owner", node),
                    node: id("node", node),
                    kind: AssetKind::ALL[kind],
                    capacity,
                    attributes: attrs(&[
                        ("model", ["a", "b", "c"][usize::from(model)]),
                        ("size", &capacity.to_string()),
                    ]),
                    privacy: match privacy {
                        0 => Privacy::Private,
                        1 => Privacy::Peers(peers.into_iter().map(|p| id("tenant", p)).collect()),
                        2 => Privacy::Network,
                        _ => Privacy::Public,
                    },
                    price_per_quantum_hour: price,
                },
            )
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Op {
    Place {
        tenant: u64,
        standing: u8,
        items: Vec<(usize, u64, u8)>,
        widest: u8,
        colocate: bool,
        max_price: u64,
    },
    Release(usize),
    Withdraw(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let place = (
        0u64..6,
        0u8..3,
        prop::collection::vec((0usize..6, 1u64..40, 0u8..4), 1..4),
        0u8..4,
        any::<bool>(),
        prop_oneof![Just(u64::MAX), 0u64..200],
    )
        .prop_map(
            |(tenant, standing, items, widest, colocate, max_price)| Op::Place {
                tenant,
                standing,
                items,
                widest,
                colocate,
                max_price,
            },
        );
    prop::collection::vec(
        prop_oneof![
            6 => place,
            2 => (0usize..64).prop_map(Op::Release),
            1 => (0usize..64).prop_map(Op::Withdraw),
        ],
        1..60,
    )
}

const STANDINGS: [Standing; 3] = [Standing::Member, Standing::Federated, Standing::Uncertified];
const LEVELS: [PrivacyLevel; 4] = [
    PrivacyLevel::Private,
    PrivacyLevel::Peers,
    PrivacyLevel::Network,
    PrivacyLevel::Public,
];

fn constraint(code: u8) -> Vec<Constraint> {
    match code {
        0 => Vec::new(),
        1 => vec![Constraint::Equals {
            key: "model".into(),
            value: "a".into(),
        }],
        2 => vec![Constraint::AtLeast {
            key: "size".into(),
            min: 20,
        }],
        _ => vec![Constraint::OneOf {
            key: "model".into(),
            values: vec!["b".into(), "c".into()],
        }],
    }
}

/// Brute force: whether `asset` may take `item` of `request` for `tenant`
/// with `free` units free — the filters, written again independently.
fn oracle_fits(
    asset: &Asset,
    free: u64,
    item: &RequestItem,
    request: &LeaseRequest,
    tenant: &Tenant,
) -> bool {
    let own = asset.owner == tenant.id;
    let admitted = own
        || match &asset.privacy {
            Privacy::Private => false,
            Privacy::Peers(peers) => {
                tenant.standing == Standing::Member && peers.contains(&tenant.id)
            }
            Privacy::Network => tenant.standing == Standing::Member,
            Privacy::Public => tenant.standing != Standing::Uncertified,
        };
    asset.kind == item.kind
        && admitted
        && (own || asset.privacy.level() <= request.widest_privacy)
        && item.constraints.iter().all(|c| c.holds(&asset.attributes))
        && free >= item.amount
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the market and the sequence of requests, releases and
    /// withdrawals: every placement satisfies every filter, is reserved
    /// whole, and the invariants hold after each step; a single-item
    /// request is refused exactly when the oracle finds no asset, and a
    /// capacity refusal's largest free amount is true.
    #[test]
    fn placements_obey_every_filter_and_reservations_never_exceed_capacity(
        assets in market(),
        ops in ops(),
    ) {
        let mut scheduler = Scheduler::new();
        for asset in &assets {
            scheduler.register(asset.clone()).expect("valid test asset");
        }
        let mut leases: Vec<LeaseId> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Place { tenant, standing, items, widest, colocate, max_price } => {
                    let tenant = Tenant { id: id("tenant", tenant), standing: STANDINGS[usize::from(standing)] };
                    let request = LeaseRequest {
                        tenant: tenant.id,
                        items: items.iter().map(|(kind, amount, code)| RequestItem {
                            kind: AssetKind::ALL[*kind],
                            amount: *amount,
                            constraints: constraint(*code),
                        }).collect(),
                        widest_privacy: LEVELS[usize::from(widest)],
                        colocate,
                        max_price_per_hour: max_price,
                        duration_ms: 60_000,
                    };
                    let free = |asset: &AssetId| {
                        let reserved = scheduler.reserved(asset).unwrap_or(0);
                        scheduler.asset(asset).map_or(0, |a| a.capacity - reserved)
                    };
                    match scheduler.place(&request, &tenant) {
                        Ok(placement) => {
                            prop_assert_eq!(placement.parts.len(), request.items.len());
                            let mut taken: BTreeMap<AssetId, u64> = BTreeMap::new();
                            let mut cost = 0u64;
                            for (part, item) in placement.parts.iter().zip(&request.items) {
                                let asset = scheduler.asset(&part.asset).expect("placed on a held asset");
                                prop_assert!(!scheduler.is_withdrawn(&part.asset));
                                let left = free(&part.asset) - taken.get(&part.asset).copied().unwrap_or(0);
                                prop_assert!(oracle_fits(asset, left, item, &request, &tenant));
                                prop_assert_eq!(part.amount, item.amount);
                                *taken.entry(part.asset).or_default() += part.amount;
                                cost = cost.saturating_add(asset.cost_per_hour(item.amount).expect("small test prices"));
                            }
                                                        prop_assert_eq!(cost, placement.cost_per_hour);
                            if request.items.len() == 1 && !colocate {
                                // The winner is the cheapest, then tightest,
                                // then lowest id of all that fit.
                                let item = &request.items[0];
                                let best = assets
                                    .iter()
                                    .filter(|asset| {
                                        scheduler.asset(&asset.id).is_some()
                                            && !scheduler.is_withdrawn(&asset.id)
                                            && oracle_fits(asset, free(&asset.id), item, &request, &tenant)
                                    })
                                    .map(|asset| {
                                        let asset = scheduler.asset(&asset.id).expect("held");
                                        (asset.cost_per_hour(item.amount), free(&asset.id) - item.amount, asset.id)
                                    })
                                    .min();
                                prop_assert_eq!(best.map(|(_, _, id)| id), Some(placement.parts[0].asset));
                            }
                            prop_assert!(cost <= request.max_price_per_hour);
                            if colocate {
                                let nodes: BTreeSet<NodeId> = placement.parts.iter()
                                    .filter_map(|part| scheduler.asset(&part.asset).map(|a| a.node))
                                    .collect();
                                prop_assert_eq!(nodes.len(), 1);
                            }
                            let lease = id("lease", step as u64);
                            prop_assert_eq!(scheduler.reserve(lease, &placement), Ok(Reserved::New));
                            prop_assert_eq!(scheduler.reserve(lease, &placement), Ok(Reserved::Already));
                            leases.push(lease);
                        }
                        Err(unmet) => {
                            let single = request.items.len() == 1;
                            if single {
                                let item = &request.items[0];
                                let any_fits = assets.iter().any(|asset| {
                                    scheduler.asset(&asset.id).is_some()
                                        && !scheduler.is_withdrawn(&asset.id)
                                        && oracle_fits(asset, free(&asset.id), item, &request, &tenant)
                                });
                                match &unmet {
                                    Unmet::TooExpensive { cheapest_per_hour, max_per_hour } => {
                                        prop_assert!(any_fits);
                                        prop_assert!(cheapest_per_hour > max_per_hour);
                                    }
                                    Unmet::NoAsset { filter, largest_free, .. } => {
                                        prop_assert!(!any_fits, "refused but the oracle fits: {unmet}");
                                        if *filter == Filter::Capacity {
                                            prop_assert!(*largest_free < item.amount);
                                        }
                                    }
                                    other => prop_assert!(false, "single item refused as {other:?}"),
                                }
                            }
                            // A refusal names its reason in words.
                            prop_assert!(!unmet.to_string().is_empty());
                        }
                    }
                }
                Op::Release(at) => {
                    if !leases.is_empty() {
                        let lease = leases.remove(at % leases.len());
                        prop_assert!(scheduler.release(&lease).is_some());
                        prop_assert!(scheduler.release(&lease).is_none());
                    }
                }
                Op::Withdraw(at) => {
                    let asset = &assets[at % assets.len()];
                    let before = scheduler.reserved(&asset.id);
                    match scheduler.withdraw(&asset.id) {
                        Ok(Withdrawal::Removed) => prop_assert_eq!(before, Some(0)),
                        Ok(Withdrawal::Draining { reserved }) => prop_assert_eq!(before, Some(reserved)),
                        Err(_) => prop_assert_eq!(before, None),
                    }
                }
            }
            if let Err(violation) = scheduler.check() {
                prop_assert!(false, "step {step}: {violation}");
            }
        }
        // Releasing everything frees every asset whole.
        for lease in leases {
            prop_assert!(scheduler.release(&lease).is_some());
        }
        for asset in &assets {
            prop_assert!(scheduler.reserved(&asset.id).is_none_or(|reserved| reserved == 0));
        }
        prop_assert_eq!(scheduler.leases_len(), 0);
    }

    /// A reservation decided on another state is refused whole: nothing
    /// of it is taken.
    #[test]
    fn a_stale_placement_is_refused_without_taking_anything(
        assets in market(),
        amount in 1u64..64,
    ) {
        let mut scheduler = Scheduler::new();
        for asset in &assets {
            scheduler.register(asset.clone()).expect("valid test asset");
        }
        let first = &assets[0];
        let parts = vec![
            Part { asset: first.id, amount: 1 },
            Part { asset: first.id, amount: amount.max(first.capacity) },
        ];
        let before: Vec<Option<u64>> = assets.iter().map(|a| scheduler.reserved(&a.id)).collect();
        let placement = Placement { parts, cost_per_hour: 0 };
        let refused = scheduler.reserve(id("lease", 0), &placement);
        let is_capacity_refusal = matches!(refused, Err(ReserveError::Capacity { .. }));
        prop_assert!(is_capacity_refusal);
        let after: Vec<Option<u64>> = assets.iter().map(|a| scheduler.reserved(&a.id)).collect();
        prop_assert_eq!(before, after);
        prop_assert!(scheduler.lease(&id("lease", 0)).is_none());
    }
}
