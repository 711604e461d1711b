//! hm_wire::merkle against the published RFC 6962/9162 vectors of
//! transparency-dev/merkle (vendored as data in testdata/, see its README).

use hm_wire::Hash;
use hm_wire::merkle::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, root, verify_consistency,
    verify_inclusion,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    leaf_inputs: Vec<String>,
    root_hashes_by_size: Vec<String>,
    inclusion: Vec<InclusionProbe>,
    consistency: Vec<ConsistencyProbe>,
}

#[derive(Deserialize)]
struct InclusionProbe {
    file: String,
    leaf_index: u64,
    tree_size: u64,
    root: Option<String>,
    leaf_hash: Option<String>,
    proof: Vec<String>,
    want_err: bool,
}

#[derive(Deserialize)]
struct ConsistencyProbe {
    file: String,
    size1: u64,
    size2: u64,
    root1: Option<String>,
    root2: Option<String>,
    proof: Vec<String>,
    want_err: bool,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../testdata/rfc6962_vectors.json")).expect("valid JSON")
}

fn bytes(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The probes include values that are not 32 bytes (to test the Go
/// verifier's length checks); our API takes `Hash`, so such a value cannot
/// even be passed. A leaf hash of the wrong length is refused by the type
/// (see `inclusion_probes`). Roots are compared as opaque bytes by the Go
/// verifier, so a wrong-length root is mapped to a 32-byte value that keeps
/// equality between probe values (equal bytes → equal Hash) and differs
/// from every real hash.
fn probe_hash(hex: Option<&str>) -> Hash {
    let raw = bytes(hex.unwrap_or(""));
    match Hash::from_slice(&raw) {
        Ok(hash) => hash,
        Err(_) => hm_wire::hash("hm/test/odd-length-probe/v1", &raw),
    }
}

#[test]
fn roots_of_the_reference_tree() {
    let v = vectors();
    let leaves: Vec<Vec<u8>> = v.leaf_inputs.iter().map(|hex| bytes(hex)).collect();
    let refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
    assert_eq!(v.root_hashes_by_size.len(), 9);
    assert_eq!(empty_root().to_hex(), v.root_hashes_by_size[0]);
    for (size, expected) in v.root_hashes_by_size.iter().enumerate() {
        assert_eq!(
            root(&refs[..size]).to_hex(),
            *expected,
            "root of size {size}"
        );
    }
    assert_eq!(leaf_hash(&leaves[0]).to_hex(), v.root_hashes_by_size[1]);
}

#[test]
fn inclusion_probes() {
    let v = vectors();
    assert!(v.inclusion.len() > 50);
    let mut wrong = Vec::new();
    let mut refused_by_type = 0;
    for probe in &v.inclusion {
        let proof: Vec<Hash> = probe
            .proof
            .iter()
            .map(|hex| probe_hash(Some(hex)))
            .collect();
        if bytes(probe.leaf_hash.as_deref().unwrap_or("")).len() != Hash::LEN {
            // Not representable as a `Hash`: the type refuses it before any
            // verification. Mapped to 32 bytes it still fails, unless the
            // root is the very same bytes (then only the length check of the
            // Go verifier tells them apart).
            assert!(
                probe.want_err,
                "{}: wrong-length leaf hash must be an error",
                probe.file
            );
            refused_by_type += 1;
            if probe.leaf_hash != probe.root {
                let mapped = verify_inclusion(
                    &probe_hash(probe.leaf_hash.as_deref()),
                    probe.leaf_index,
                    probe.tree_size,
                    &proof,
                    &probe_hash(probe.root.as_deref()),
                );
                assert!(mapped.is_err(), "{}: mapped leaf verified", probe.file);
            }
            continue;
        }
        let result = verify_inclusion(
            &probe_hash(probe.leaf_hash.as_deref()),
            probe.leaf_index,
            probe.tree_size,
            &proof,
            &probe_hash(probe.root.as_deref()),
        );
        if result.is_err() != probe.want_err {
            wrong.push(format!(
                "{}: want_err {} got {result:?}",
                probe.file, probe.want_err
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} probes disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The 11 probes with a leaf "hash" of another length (wrong-leaf, empty).
    assert_eq!(refused_by_type, 11);
}

#[test]
fn consistency_probes() {
    let v = vectors();
    assert!(v.consistency.len() > 50);
    let mut wrong = Vec::new();
    for probe in &v.consistency {
        let proof: Vec<Hash> = probe
            .proof
            .iter()
            .map(|hex| probe_hash(Some(hex)))
            .collect();
        let result = verify_consistency(
            probe.size1,
            probe.size2,
            &probe_hash(probe.root1.as_deref()),
            &probe_hash(probe.root2.as_deref()),
            &proof,
        );
        if result.is_err() != probe.want_err {
            wrong.push(format!(
                "{}: want_err {} got {result:?}",
                probe.file, probe.want_err
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} probes disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Our generated proofs for the reference tree equal the published
/// happy-path proofs byte for byte.
#[test]
fn generated_proofs_equal_the_happy_paths() {
    let v = vectors();
    let leaves: Vec<Vec<u8>> = v.leaf_inputs.iter().map(|hex| bytes(hex)).collect();
    let refs: Vec<&[u8]> = leaves.iter().map(Vec::as_slice).collect();
    let mut checked = 0;
    for probe in v
        .inclusion
        .iter()
        .filter(|p| p.file.ends_with("happy-path.json"))
    {
        let size = probe.tree_size as usize;
        let proof = inclusion_proof(&refs[..size], probe.leaf_index).expect("in range");
        let hex: Vec<String> = proof.iter().map(Hash::to_hex).collect();
        assert_eq!(hex, probe.proof, "{}", probe.file);
        assert_eq!(root(&refs[..size]), probe_hash(probe.root.as_deref()));
        checked += 1;
    }
    for probe in v
        .consistency
        .iter()
        .filter(|p| p.file.ends_with("happy-path.json"))
    {
        let proof = consistency_proof(&refs, probe.size1, probe.size2).expect("sizes in range");
        let hex: Vec<String> = proof.iter().map(Hash::to_hex).collect();
        assert_eq!(hex, probe.proof, "{}", probe.file);
        checked += 1;
    }
    assert_eq!(checked, 10);
}
