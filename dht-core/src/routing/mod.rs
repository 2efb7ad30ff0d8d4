//! The routing table: up to 256 buckets (k entries or more, see `RoutingTable::with_bucket_growth`) indexed
//! by the number of leading bits a peer's id shares with ours.

mod bucket;
mod table;

pub use bucket::Entry;
pub use table::{InsertResult, RoutingTable, MAX_BUCKET_GROWTH};
