//! The domain at the centre: what happened ([`event`]), what may be done about it
//! ([`policy`], [`matcher`], [`guards`], [`freeze`], [`principal`]), the pure decision
//! ([`decide`], with its trace in [`decision`]), and what is done ([`plan`], [`rollback`],
//! [`artifacts`]). Nothing here does I/O; [`ident`] says which values from senders may name
//! anything.

pub mod artifacts;
pub mod audit;
pub mod decide;
pub mod decision;
pub mod event;
pub mod freeze;
pub mod guards;
pub mod history;
pub mod ident;
pub mod matcher;
pub mod plan;
pub mod policy;
pub mod principal;
pub mod rollback;
