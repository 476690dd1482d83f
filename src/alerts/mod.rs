//! Plans, sensor types, readings and warnings, without HTTP (issue 10).
//!
//! - [`level`]: the four warning levels, blue to red.
//! - [`rule`]: thresholds, direction, hysteresis, the pending period, staleness.
//! - [`engine`]: sensors' and subjects' levels from readings, and the warnings' life.

pub mod cap;
pub mod engine;
pub mod level;
pub mod plans;
pub mod readings;
pub mod rule;
pub mod sensor_types;

pub use engine::{Engine, Subject, SubjectKind, Transition, TransitionKind, Warning};
pub use level::Level;
pub use rule::{Direction, Mapping, Millis, Rule};
