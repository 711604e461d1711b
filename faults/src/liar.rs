//! A lying full node's answers to light clients: the honest answer in, a
//! lie out. Sans-I/O, so the same lies serve the simulator's Byzantine full
//! nodes and the real-process test that puts a lying proxy in front of an
//! honest `hm-node` (`node/host/tests/trust_cluster.rs`).
//!
//! Each lie is what a full node without validators' keys can do: change
//! what it proves, serve an old but once-committed state, or alter a
//! header it cannot re-certify. A correct light client refuses every one.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::str::FromStr;

use hm_kernel::block::Height;
use hm_node::{ApiRequest, ApiResponse};
use hm_trustchain::dns::DnsRecord;

/// An address no honest record points at (RFC 3849 documentation prefix).
pub const FORGED_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x666, 0x666);

/// The lies a full node can tell a light client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lie {
    /// A proven DNS record's address replaced by [`FORGED_ADDR`], the
    /// honest proof kept.
    ForgedRecord,
    /// The state the node held when it answered first, served again as
    /// current with its (validly certified) old header.
    StaleState,
    /// The header of an answer altered (its state root), the certificate
    /// kept.
    ForgedHeader,
}

impl FromStr for Lie {
    type Err = String;

    fn from_str(text: &str) -> Result<Lie, String> {
        match text {
            "forged-record" => Ok(Lie::ForgedRecord),
            "stale-state" => Ok(Lie::StaleState),
            "forged-header" => Ok(Lie::ForgedHeader),
            other => Err(format!(
                "unknown lie {other:?}; one of forged-record, stale-state, forged-header"
            )),
        }
    }
}

/// A liar's memory: the first proven answer it relayed and the first
/// headers answer per asked height, which [`Lie::StaleState`] serves from
/// then on.
#[derive(Debug, Clone, Default)]
pub struct Liar {
    lie: Option<Lie>,
    first_state: Option<ApiResponse>,
    /// Bounded by [`HEADERS_REMEMBERED_MAX`].
    first_headers: BTreeMap<Height, ApiResponse>,
}

/// Headers answers a stale liar remembers (the oldest are forgotten).
pub const HEADERS_REMEMBERED_MAX: usize = 1_024;

impl Liar {
    pub fn new(lie: Lie) -> Liar {
        Liar {
            lie: Some(lie),
            ..Liar::default()
        }
    }

    /// What the liar answers to `request`, given the honest node's answer.
    pub fn answer(&mut self, request: &ApiRequest, honest: ApiResponse) -> ApiResponse {
        match (self.lie, request, honest) {
            (Some(Lie::ForgedRecord), ApiRequest::ProveState { .. }, honest) => {
                forge_record(honest)
            }
            (Some(Lie::StaleState), ApiRequest::ProveState { .. }, honest) => {
                self.first_state.get_or_insert(honest).clone()
            }
            (Some(Lie::StaleState), ApiRequest::Headers { from, .. }, honest) => {
                // Headers are immutable once committed, so the old answer
                // per height is the honest one; kept for the stale state's
                // height.
                if self.first_headers.len() >= HEADERS_REMEMBERED_MAX {
                    self.first_headers.pop_first();
                }
                self.first_headers.entry(*from).or_insert(honest).clone()
            }
            (
                Some(Lie::ForgedHeader),
                ApiRequest::Headers { .. },
                ApiResponse::Headers(mut headers),
            ) => {
                for certified in &mut headers {
                    certified.header.state_root.0[0] ^= 1;
                }
                ApiResponse::Headers(headers)
            }
            (_, _, honest) => honest,
        }
    }
}

/// Every value of a proved answer rewritten: DNS records point at
/// [`FORGED_ADDR`], other values get one byte flipped; the honest proofs
/// are kept (they prove the honest values, not these).
fn forge_record(honest: ApiResponse) -> ApiResponse {
    let ApiResponse::ProvedState {
        height,
        mut entries,
    } = honest
    else {
        return honest;
    };
    for entry in &mut entries {
        let Some(bytes) = entry.value.take() else {
            continue;
        };
        let forged = match DnsRecord::decode(&bytes) {
            Ok(mut record) => {
                for addr in &mut record.addrs {
                    *addr = FORGED_ADDR;
                }
                record.encode()
            }
            Err(_) => {
                let mut bytes = bytes;
                if let Some(last) = bytes.last_mut() {
                    *last ^= 1;
                }
                bytes
            }
        };
        entry.value = Some(forged);
    }
    ApiResponse::ProvedState { height, entries }
}

impl hm_node::conduct::ApiConduct for Liar {
    fn answer(&mut self, request: &ApiRequest, honest: ApiResponse) -> ApiResponse {
        Liar::answer(self, request, honest)
    }
}

#[cfg(test)]
mod tests {
    use hm_kernel::state::{ModuleProof, StateTree};
    use hm_node::api::ProvedEntry;
    use hm_trustchain::name::DnsName;
    use hm_wire::Hash;

    use super::*;

    fn record_answer(height: u64, addr: Ipv6Addr) -> ApiResponse {
        let record = DnsRecord {
            name: DnsName::parse("n1.mesh").expect("a name"),
            owner: Hash([1; 32]),
            addrs: vec![addr],
            certificate: Hash([2; 32]),
            sequence: 1,
            updated_height: height,
            registered_ms: 0,
        };
        ApiResponse::ProvedState {
            height,
            entries: vec![ProvedEntry {
                value: Some(record.encode()),
                proof: ModuleProof {
                    module: 1,
                    module_roots: vec![],
                    proof: StateTree::new().prove(b"k"),
                },
            }],
        }
    }

    fn prove() -> ApiRequest {
        ApiRequest::ProveState {
            module: 1,
            keys: vec![b"k".to_vec()],
        }
    }

    #[test]
    fn a_forged_record_points_elsewhere_and_keeps_the_honest_proof() {
        let mut liar = Liar::new(Lie::ForgedRecord);
        let honest = record_answer(7, Ipv6Addr::LOCALHOST);
        let ApiResponse::ProvedState { entries, .. } = liar.answer(&prove(), honest.clone()) else {
            panic!("a proved state");
        };
        let [forged] = entries.as_slice() else {
            panic!("one entry per asked key");
        };
        let value = forged.value.as_deref().expect("a value");
        let record = DnsRecord::decode(value).expect("a record");
        assert_eq!(record.addrs, vec![FORGED_ADDR]);
        let ApiResponse::ProvedState {
            entries: honest_entries,
            ..
        } = honest
        else {
            unreachable!()
        };
        assert_eq!(forged.proof, honest_entries[0].proof);
    }

    #[test]
    fn a_stale_liar_serves_its_first_answer_forever() {
        let mut liar = Liar::new(Lie::StaleState);
        let first = record_answer(3, Ipv6Addr::LOCALHOST);
        assert_eq!(liar.answer(&prove(), first.clone()), first);
        assert_eq!(
            liar.answer(&prove(), record_answer(9, Ipv6Addr::LOCALHOST)),
            first
        );
        let headers = ApiRequest::Headers { from: 3, count: 1 };
        let old = ApiResponse::Headers(vec![]);
        assert_eq!(liar.answer(&headers, old.clone()), old);
        assert_eq!(
            liar.answer(&headers, ApiResponse::Error("newer".into())),
            old
        );
        // Another height's headers are relayed (and remembered) apart.
        let other = ApiRequest::Headers { from: 1, count: 1 };
        let first = ApiResponse::Error("height 1".into());
        assert_eq!(liar.answer(&other, first.clone()), first);
    }

    #[test]
    fn lies_are_named_on_the_command_line() {
        assert_eq!("forged-record".parse(), Ok(Lie::ForgedRecord));
        assert_eq!("stale-state".parse(), Ok(Lie::StaleState));
        assert_eq!("forged-header".parse(), Ok(Lie::ForgedHeader));
        assert!(
            "polite"
                .parse::<Lie>()
                .expect_err("not a lie")
                .contains("one of")
        );
    }
}
