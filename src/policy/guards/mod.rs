//! The guards, one file each. Each has one job and refuses with one reason code; the policy
//! compiler in `policy` decides which run for a route and in what order.

mod api_key;
mod ban;
mod body_size;
mod content_type;
mod decrypt;
mod ip;
pub mod limit;
mod method;
mod origin;
pub mod replay;
pub mod signature;
mod token;

pub use api_key::ApiKeyGuard;
#[cfg(test)]
pub(crate) mod testing;
mod user_agent;

pub use ban::BanGuard;
pub use body_size::BodySizeGuard;
pub use content_type::ContentTypeGuard;
pub use decrypt::DecryptGuard;
pub use ip::IpGuard;
pub use limit::{LimitGuard, LimitScope};
pub use method::MethodGuard;
pub use origin::OriginGuard;
pub use replay::ReplayGuard;
pub use signature::SignatureGuard;
pub use token::TokenGuard;
pub use user_agent::UserAgentGuard;
