//! Who acts on a rollback, freeze or hold: an operator at the CLI (trusted as whoever runs
//! rollbackd, named for the record) or a person authenticated by chat or GitHub, checked
//! against the policy's `chatops` rules.

use crate::domain::principal::Principal;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// An operator at the CLI: `--who NAME` (recorded as `cli:NAME`).
    Cli(String),
    /// A person, as chat or GitHub authenticated them.
    Person(Principal),
}

impl Actor {
    pub fn cli(name: impl Into<String>) -> Self {
        Actor::Cli(name.into())
    }

    /// The person to check against the policy's rules; `None` for an operator.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Actor::Cli(_) => None,
            Actor::Person(p) => Some(p),
        }
    }

    /// How the record names who acted: `cli:NAME`, or the principal's id.
    pub fn id(&self) -> String {
        match self {
            Actor::Cli(name) => format!("cli:{name}"),
            Actor::Person(p) => p.id.clone(),
        }
    }
}

impl From<Principal> for Actor {
    fn from(p: Principal) -> Self {
        Actor::Person(p)
    }
}
