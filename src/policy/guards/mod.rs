//! The guards, one file each. Each has one job and refuses with one reason code; the policy
//! compiler in `policy` decides which run for a route and in what order.

mod body_size;
mod content_type;
mod method;
mod origin;
mod token;

pub use body_size::BodySizeGuard;
pub use content_type::ContentTypeGuard;
pub use method::MethodGuard;
pub use origin::OriginGuard;
pub use token::TokenGuard;
