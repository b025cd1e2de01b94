//! `deepseek chat`: a multi-turn conversation in the terminal.

use super::common::{load_model, ModelArgs, RuntimeArgs, SamplingArgs};
use clap::Args;
use deepseek::engine::{generate, StopCause};
use deepseek_text::ChatMessage;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model, when --model is not given.
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_pos: Option<String>,
    /// A system message placed first in the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C stops the current answer instead of the program.
fn catch_ctrl_c() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

pub fn run(a: ChatArgs) -> anyhow::Result<()> {
    let pool = a.runtime.pool()?;
    let (m, _) = load_model(&a.model, a.model_pos.as_deref(), &pool)?;
    let opts = a.sampling.options(&m, None)?;
    let ctx = a.runtime.context(&m);
    let mut cache = m.model.new_cache(ctx, a.runtime.cache_type());
    let mut cached: Vec<u32> = Vec::new();
    let interactive = std::io::stdin().is_terminal();
    let base: Vec<ChatMessage> = a
        .system
        .iter()
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    let mut history = base.clone();
    if interactive {
        catch_ctrl_c();
        eprintln!(
            "Chatting with {}. /reset clears the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer.",
            m.path.display()
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = lines.next() else {
            break;
        };
        let line = line?;
        let input = line.trim_end_matches(['\r', '\n']);
        match input.trim() {
            "/exit" | "/quit" => break,
            "/reset" => {
                history = base.clone();
                if interactive {
                    eprintln!("(conversation cleared)");
                }
                continue;
            }
            "" if interactive => continue,
            _ => {}
        }
        history.push(ChatMessage {
            role: "user".into(),
            content: input.to_string(),
        });
        let prompt = m.tokenizer.encode_chat(&history, true)?;
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut stdout = std::io::stdout();
        let mut on_text = |t: &str| -> bool {
            let ok = stdout
                .write_all(t.as_bytes())
                .and_then(|_| stdout.flush())
                .is_ok();
            ok && !INTERRUPTED.load(Ordering::SeqCst)
        };
        let result = pool.install(|| {
            generate(
                &m.model,
                &m.tokenizer,
                &mut cache,
                &mut cached,
                &prompt,
                &opts,
                &mut on_text,
            )
        });
        match result {
            Ok(g) => {
                println!();
                if g.cause == StopCause::Cancelled && interactive {
                    eprintln!("(stopped)");
                }
                history.push(ChatMessage {
                    role: "assistant".into(),
                    content: g.text,
                });
            }
            Err(e) => {
                // A turn that cannot run (say, the conversation outgrew the context) is reported
                // and dropped; the conversation goes on.
                history.pop();
                eprintln!("error: {e}");
                if !interactive {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}
