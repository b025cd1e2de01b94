//! `deepseek serve`: the OpenAI-compatible HTTP server.

use super::common::{ModelArgs, RuntimeArgs};
use clap::Args;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(_a: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("serve is not available yet")
}
