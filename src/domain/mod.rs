//! The domain at the centre: what happened ([`event`]), what may be done about it
//! ([`policy`], [`matcher`], [`guards`], [`freeze`], [`principal`]), the pure decision
//! ([`decide`], with its trace in [`decision`]), and what is done ([`plan`], [`rollback`],
//! [`artifacts`]). Nothing here does I/O; [`ident`] says which values from senders may name
//! anything.

pub(crate) mod actor;
pub(crate) mod answer;
pub(crate) mod artifacts;
pub(crate) mod audit;
pub(crate) mod breaker;
pub(crate) mod decide;
pub(crate) mod decision;
pub(crate) mod event;
pub(crate) mod explain;
pub(crate) mod freeze;
pub(crate) mod guards;
pub(crate) mod history;
pub(crate) mod hold;
pub(crate) mod ident;
pub(crate) mod matcher;
pub(crate) mod notice;
pub(crate) mod phase;
pub(crate) mod plan;
pub(crate) mod policy;
pub(crate) mod principal;
pub(crate) mod rollback;
pub(crate) mod soak;
pub(crate) mod status;
pub(crate) mod verify;
