//! Proven answers: how a light client asks a full node about the state and
//! accepts nothing it cannot prove. Sans-I/O: [`ProvenQuery`] says which
//! `hm/api` request to send next and judges each answer against a
//! [`LightClient`]; the shell (the `hm` CLI, later the light node) moves
//! the bytes and reads the clock.
//!
//! The exchange: ask the full node for the key with a proof
//! (`ProveState`); if it answers at a height the client does not trust
//! yet, ask for that height's certified header (`Headers`) and verify it
//! (skipping from the latest trusted header); then check the proof against
//! that header's state root. A forged value, a proof for another root, a
//! header without a valid certificate, an answer older than what the
//! client already trusts, or one whose header is older than the query's
//! `max_age_ms` (a stale state served as current) ends the query with a [`ProvenRefusal`] naming
//! what was wrong — never with an unproven value.
//!
//! Owns the order of requests and the judgement of answers. Must not know
//! connections, retries across full nodes, or clocks (`now_ms` is passed).

use hm_kernel::block::Height;
use hm_kernel::light::{LightClient, LightError};
use hm_kernel::validators::ValidatorSet;
use hm_wire::Hash;

use crate::api::{ApiRequest, ApiResponse, CertifiedHeader, ProvedEntry};

/// State values (or their absence) proven against a certified header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    pub height: Height,
    /// The hash of the trusted header whose state root proves the answer.
    pub header_hash: Hash,
    /// Per asked key, in order: its value and the proof that was checked.
    pub entries: Vec<ProvedEntry>,
}

impl Proven {
    /// The first asked key's value (a query of one key).
    pub fn into_value(self) -> Option<Vec<u8>> {
        self.entries
            .into_iter()
            .next()
            .and_then(|entry| entry.value)
    }

    /// The proven values, in the order the keys were asked.
    pub fn values(&self) -> Vec<Option<Vec<u8>>> {
        self.entries
            .iter()
            .map(|entry| entry.value.clone())
            .collect()
    }
}

/// Why a full node's answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvenRefusal {
    #[error("the full node refused: {0}")]
    Refused(String),
    #[error("the full node answered with {got} to a {asked} request; it does not speak this API")]
    Unexpected {
        asked: &'static str,
        got: &'static str,
    },
    #[error(
        "the full node answered about module {module}, not the module {asked} asked about; it is faulty or lying: ask another full node"
    )]
    WrongModule { asked: u8, module: u8 },
    #[error(
        "the full node answered {got} values to {asked} keys; it is faulty or lying: ask another full node"
    )]
    WrongCount { asked: usize, got: usize },
    #[error(
        "the full node answered at height {height}, below the header this client already trusts ({trusted}); its state is stale: ask another full node"
    )]
    Stale { height: Height, trusted: Height },
    #[error(
        "the full node answered with the state of height {height}, made {age_ms} ms ago, older than the {max_age_ms} ms a current answer may be; it is stale, or the chain has stalled: ask another full node, and check `hm chain head` on a validator"
    )]
    TooOld {
        height: Height,
        age_ms: u64,
        max_age_ms: u64,
    },
    #[error(
        "the full node answered at height {height} but sent no header for it; it is faulty or lying: ask another full node"
    )]
    MissingHeader { height: Height },
    #[error(
        "header {height} names validator set {named}, which this client does not know (it knows {known}); the validator set changed: re-initialise from a newer trust root"
    )]
    UnknownValidators {
        height: Height,
        named: Hash,
        known: Hash,
    },
    #[error("the full node's header {height} is not trusted: {error}")]
    Header { height: Height, error: LightError },
    #[error("the full node's answer is not proven: {0}")]
    Proof(LightError),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request to the full node and pass its answer to
    /// [`ProvenQuery::on_answer`].
    Ask(ApiRequest),
    /// The query is over.
    Done(Result<Proven, ProvenRefusal>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Waiting {
    State,
    Header {
        height: Height,
        entries: Vec<ProvedEntry>,
    },
    Over,
}

/// One proven read of `keys` (at most `API_PROVE_KEYS_MAX`) in `module`,
/// all at one height.
#[derive(Debug, Clone)]
pub struct ProvenQuery {
    module: u8,
    keys: Vec<Vec<u8>>,
    /// How old the proving header may be: a client that trusts nothing
    /// newer cannot tell an old committed state from the current one
    /// otherwise.
    max_age_ms: u64,
    waiting: Waiting,
}

impl ProvenQuery {
    /// A query and its first request; an answer whose header is older than
    /// `max_age_ms` (by its timestamp against the caller's clock) is
    /// refused as stale.
    pub fn new(module: u8, keys: Vec<Vec<u8>>, max_age_ms: u64) -> (ProvenQuery, Step) {
        let first = Step::Ask(ApiRequest::ProveState {
            module,
            keys: keys.clone(),
        });
        (
            ProvenQuery {
                module,
                keys,
                max_age_ms,
                waiting: Waiting::State,
            },
            first,
        )
    }

    /// Judges the full node's answer; `validators` is the set the client
    /// trusts (fixed by genesis today), `now_ms` the local clock.
    pub fn on_answer(
        &mut self,
        client: &mut LightClient,
        validators: &ValidatorSet,
        answer: ApiResponse,
        now_ms: u64,
    ) -> Step {
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Over);
        match (waiting, answer) {
            (_, ApiResponse::Error(reason)) => done(Err(ProvenRefusal::Refused(reason))),
            (Waiting::State, ApiResponse::ProvedState { height, entries }) => {
                if entries.len() != self.keys.len() {
                    return done(Err(ProvenRefusal::WrongCount {
                        asked: self.keys.len(),
                        got: entries.len(),
                    }));
                }
                if let Some(entry) = entries
                    .iter()
                    .find(|entry| entry.proof.module != self.module)
                {
                    return done(Err(ProvenRefusal::WrongModule {
                        asked: self.module,
                        module: entry.proof.module,
                    }));
                }
                let latest = client.latest().map_or(0, |latest| latest.height());
                if client.trusted(height).is_some() {
                    return self.judge(client, height, entries, now_ms);
                }
                if height < latest {
                    return done(Err(ProvenRefusal::Stale {
                        height,
                        trusted: latest,
                    }));
                }
                self.waiting = Waiting::Header { height, entries };
                Step::Ask(ApiRequest::Headers {
                    from: height,
                    count: 1,
                })
            }
            (Waiting::Header { height, entries }, ApiResponse::Headers(headers)) => {
                let Some(CertifiedHeader { header, commit }) = headers
                    .into_iter()
                    .find(|certified| certified.header.height == height)
                else {
                    return done(Err(ProvenRefusal::MissingHeader { height }));
                };
                let known = validators.hash();
                if header.validators_hash != known {
                    return done(Err(ProvenRefusal::UnknownValidators {
                        height,
                        named: header.validators_hash,
                        known,
                    }));
                }
                let next = (header.next_validators_hash == known).then_some(validators);
                if let Err(error) = client.verify(&header, &commit, validators, next, now_ms) {
                    return done(Err(ProvenRefusal::Header { height, error }));
                }
                self.judge(client, height, entries, now_ms)
            }
            (Waiting::State, other) => done(Err(ProvenRefusal::Unexpected {
                asked: "ProveState",
                got: crate::api::response_kind(&other),
            })),
            (Waiting::Header { .. }, other) => done(Err(ProvenRefusal::Unexpected {
                asked: "Headers",
                got: crate::api::response_kind(&other),
            })),
            (Waiting::Over, _) => done(Err(ProvenRefusal::Unexpected {
                asked: "nothing",
                got: "an answer after the query ended",
            })),
        }
    }

    fn judge(
        &mut self,
        client: &LightClient,
        height: Height,
        entries: Vec<ProvedEntry>,
        now_ms: u64,
    ) -> Step {
        let made_ms = client
            .trusted(height)
            .map_or(0, |trusted| trusted.timestamp_ms());
        let age_ms = now_ms.saturating_sub(made_ms);
        if age_ms > self.max_age_ms {
            return done(Err(ProvenRefusal::TooOld {
                height,
                age_ms,
                max_age_ms: self.max_age_ms,
            }));
        }
        for (key, entry) in self.keys.iter().zip(&entries) {
            if let Err(error) = client.verify_state(
                height,
                self.module,
                key,
                entry.value.as_deref(),
                &entry.proof,
            ) {
                return done(Err(ProvenRefusal::Proof(error)));
            }
        }
        let header_hash = client
            .trusted(height)
            .map_or(Hash::ZERO, |trusted| trusted.hash());
        done(Ok(Proven {
            height,
            header_hash,
            entries,
        }))
    }
}

fn done(result: Result<Proven, ProvenRefusal>) -> Step {
    Step::Done(result)
}

#[cfg(test)]
#[path = "proven_tests.rs"]
mod tests;
