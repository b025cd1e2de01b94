//! The command line: one file per subcommand.

pub mod bench;
pub mod cache;
pub mod chat;
pub mod common;
pub mod perplexity;
pub mod quantize;
pub mod run;
pub mod serve;
pub mod tokenize;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "deepseek",
    version,
    about = "Run DeepSeek LLM (and other LLaMA-family models) on this machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Complete a prompt, streaming the text to stdout (or one JSON object with --json).
    Run(run::RunArgs),
    /// Chat in the terminal, keeping the history across turns.
    Chat(chat::ChatArgs),
    /// Print the token ids of a text as a JSON array.
    Tokenize(tokenize::TokenizeArgs),
    /// Perplexity of a text file, by llama-perplexity's method.
    Perplexity(perplexity::PerplexityArgs),
    /// Prefill and decode speed, as llama-bench measures them.
    Bench(bench::BenchArgs),
    /// List the models in the Hugging Face cache.
    List(cache::ListArgs),
    /// Remove a model from the Hugging Face cache.
    Rm(cache::RmArgs),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::ServeArgs),
    /// Write a GGUF file from a Hugging Face folder or a GGUF file, re-encoding the weights.
    Quantize(quantize::QuantizeArgs),
}

/// Parse the command line. Usage errors are one line (the details of `--help` are a flag away).
fn parse() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("error: {first} (see --help)");
            std::process::exit(2);
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    let cli = parse();
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Quantize(a) => quantize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Bench(a) => bench::run(a),
        Command::List(a) => cache::list(a),
        Command::Rm(a) => cache::rm(a),
    }
}
