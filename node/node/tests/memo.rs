//! Block execution with memos on, as the simulator runs it. A process of
//! its own: the switch (`hm_env::memo::enable`) is process-wide and never
//! turns off, and hm-node's unit tests run as a real node does, with memos
//! off. One test, because it checks the answers with memos off first.

use hm_env::mem::SeededEntropy;
use hm_kernel::app::{Application, BlockContext};
use hm_kernel::validators::ValidatorSet;
use hm_node::app::{NodeApp, SharedTrust, kv_put};
use hm_trustchain::app::{TrustApp, TrustConfig};
use hm_trustchain::cert::Authorities;
use hm_trustchain::name::DnsName;
use hm_wire::{Hash, SigningKey};

fn fresh_app(validators: &ValidatorSet) -> NodeApp {
    NodeApp::new(SharedTrust::new(TrustApp::new(TrustConfig {
        zone: DnsName::parse("hm").expect("a valid zone"),
        authorities: Authorities::from_validators(validators),
        chain_id: Hash([0xc1; 32]),
        validators: validators.clone(),
    })))
}

/// A remembered execution is the one computed without memos, and never
/// answers for the same block on another parent state.
#[test]
fn a_remembered_execution_is_the_computed_one_and_stays_with_its_parent_state() {
    assert!(
        !hm_env::memo::enabled(),
        "the test starts as a real node runs"
    );
    let key = SigningKey::generate(&SeededEntropy::new(1, b"memo-validator"));
    let validators = ValidatorSet::new([(key.verifying_key(), 1)]).expect("one validator");
    let first = (BlockContext::new(1, 1_000), [kv_put(b"a", b"1", 1)]);
    let second = (BlockContext::new(2, 2_000), [kv_put(b"b", b"2", 2)]);
    let after_first = |execution| {
        let mut app = fresh_app(&validators);
        app.commit_execution(1, execution)
            .expect("the first block commits");
        app
    };

    // Computed, with memos off.
    let first_on_genesis = fresh_app(&validators).execute_block(first.0, &first.1);
    let second_on_first = after_first(&first_on_genesis).execute_block(second.0, &second.1);
    let second_on_genesis = fresh_app(&validators).execute_block(second.0, &second.1);
    assert_ne!(
        second_on_first.state_root, second_on_genesis.state_root,
        "the parent state matters, so a leak would show"
    );

    // Remembered: the first round computes, the second hits.
    hm_env::memo::enable();
    for _ in 0..2 {
        assert_eq!(
            fresh_app(&validators).execute_block(first.0, &first.1),
            first_on_genesis
        );
        assert_eq!(
            after_first(&first_on_genesis).execute_block(second.0, &second.1),
            second_on_first
        );
        assert_eq!(
            fresh_app(&validators).execute_block(second.0, &second.1),
            second_on_genesis
        );
    }
}
