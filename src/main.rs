mod cli;

fn main() {
    if let Err(e) = cli::main() {
        // One line: the error and those of its causes that it does not already spell out.
        let mut line = e.to_string();
        for cause in e.chain().skip(1) {
            let c = cause.to_string();
            if !line.contains(&c) {
                line = format!("{line}: {c}");
            }
        }
        eprintln!("error: {}", line.replace('\n', " "));
        std::process::exit(1);
    }
}
