//! What the checkers' unit tests share: finding a property in a verdict
//! and saying why it must fail.

use crate::outcome::PropertyResult;

/// The property `name` among `properties`.
pub fn property(properties: &[PropertyResult], name: &str) -> PropertyResult {
    properties
        .iter()
        .find(|property| property.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no property {name} in {properties:?}"))
}

/// `verdict` failed, and its detail says `why`.
#[track_caller]
pub fn assert_fails(verdict: &PropertyResult, why: &str) {
    assert!(
        !verdict.passed,
        "{} passed: {}",
        verdict.name, verdict.detail
    );
    assert!(
        verdict.detail.contains(why),
        "{} failed, but its detail does not say {why:?}: {}",
        verdict.name,
        verdict.detail
    );
}

/// `verdict` passed.
#[track_caller]
pub fn assert_passes(verdict: &PropertyResult) {
    assert!(
        verdict.passed,
        "{} failed: {}",
        verdict.name, verdict.detail
    );
}

/// A chain whose one genesis validator holds all the stake (its key, made
/// from `label`), with the `mesh` zone.
pub fn one_validator_chain(
    label: &str,
) -> (
    hm_wire::SigningKey,
    hm_kernel::genesis::Genesis,
    hm_trustchain::name::DnsName,
) {
    let entropy = hm_env::mem::SeededEntropy::new(1, label.as_bytes());
    let key = hm_wire::SigningKey::generate(&entropy);
    let (genesis, _) = hm_kernel::genesis::Genesis::with_plots(
        label,
        0,
        &[(key.verifying_key(), 10)],
        hm_kernel::genesis::ProofParams::for_simulation(),
    )
    .expect("a small plot");
    let zone = hm_trustchain::name::DnsName::parse("mesh").expect("a valid zone");
    (key, genesis, zone)
}
