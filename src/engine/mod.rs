//! Generation: sequences, stop conditions, and the loops that drive the model.

pub mod generate;
pub mod scheduler;
pub mod stop;

pub use generate::{
    generate, FinishReason, GenerateOptions, Generation, Sequence, StopCause, TokenLogprob,
};
