//! The guards, one file each. Each has one job and refuses with one reason code; the policy
//! compiler in `policy` decides which run for a route and in what order.

mod ban;
mod body_size;
mod content_type;
mod ip;
pub mod limit;
mod method;
#[cfg(test)]
pub(crate) mod testing;
mod user_agent;

pub use ban::BanGuard;
pub use body_size::BodySizeGuard;
pub use content_type::ContentTypeGuard;
pub use ip::IpGuard;
pub use limit::{LimitGuard, LimitScope};
pub use method::MethodGuard;
pub use user_agent::UserAgentGuard;
