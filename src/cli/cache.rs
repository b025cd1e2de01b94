//! `deepseek list` and `deepseek rm`: models in the Hugging Face cache.

use clap::Args;

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The repository to remove from the cache, org/name.
    pub id: String,
}

fn human(bytes: u64) -> String {
    let mut v = bytes as f64;
    let mut unit = "B";
    for next in ["KB", "MB", "GB", "TB"] {
        if v < 1000.0 {
            break;
        }
        v /= 1000.0;
        unit = next;
    }
    if unit == "B" {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {unit}")
    }
}

pub fn list(a: ListArgs) -> anyhow::Result<()> {
    let opts = deepseek_hub::HubOptions::from_env();
    let models = deepseek_hub::list_cached(&opts)?;
    if a.json {
        let rows: Vec<_> = models
            .iter()
            .map(|m| {
                serde_json::json!({"id": m.id, "revision": m.revision, "refs": m.refs, "size_bytes": m.size_bytes,
                                   "format": m.format, "path": m.path})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if models.is_empty() {
        eprintln!("no models in {}", opts.cache_dir.display());
        return Ok(());
    }
    println!(
        "{:<48} {:<14} {:>10}  {:<18} refs",
        "id", "revision", "size", "format"
    );
    for m in &models {
        println!(
            "{:<48} {:<14} {:>10}  {:<18} {}",
            m.id,
            &m.revision[..m.revision.len().min(12)],
            human(m.size_bytes),
            m.format,
            m.refs.join(",")
        );
    }
    Ok(())
}

pub fn rm(a: RmArgs) -> anyhow::Result<()> {
    let opts = deepseek_hub::HubOptions::from_env();
    let freed = deepseek_hub::remove_cached(&opts, &a.id)?;
    eprintln!("removed {} ({} freed)", a.id, human(freed));
    Ok(())
}
