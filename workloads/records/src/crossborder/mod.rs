//! Cross-border records: the records service's side of the PatientIndex. [`link`] is what
//! the operator handed over (keys, the index's connection, linked countries); [`registrar`]
//! keeps the index's entries of this Region's patients current.

pub mod link;
pub mod registrar;
