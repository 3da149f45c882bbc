//! The guards, one file each. Each has one job and refuses with one reason code; the policy
//! compiler in `policy` decides which run for a route and in what order.

mod api_key;
mod body_size;
mod content_type;
mod method;
mod origin;
pub mod replay;
pub mod signature;
mod token;

pub use api_key::ApiKeyGuard;
pub use body_size::BodySizeGuard;
pub use content_type::ContentTypeGuard;
pub use method::MethodGuard;
pub use origin::OriginGuard;
pub use replay::ReplayGuard;
pub use signature::SignatureGuard;
pub use token::TokenGuard;
