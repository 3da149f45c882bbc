//! The guards, one file each. Each has one job and refuses with one reason code; the policy
//! compiler in `policy` decides which run for a route and in what order.

mod body_size;
mod content_type;
mod decrypt;
mod method;

pub use body_size::BodySizeGuard;
pub use content_type::ContentTypeGuard;
pub use decrypt::DecryptGuard;
pub use method::MethodGuard;
