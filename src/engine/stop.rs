//! Stop strings over streamed text: text that could still become a stop string is held back,
//! so nothing is printed that must later be taken back, and nothing after a stop is emitted.

#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What one piece of streamed text produced.
#[derive(Debug, PartialEq, Eq)]
pub struct StopOutput {
    /// Text that is safe to emit now.
    pub emit: String,
    /// A stop string was found: generation ends, `emit` holds the text before it.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutput {
        if self.stops.is_empty() {
            return StopOutput {
                emit: text.to_string(),
                stopped: false,
            };
        }
        self.pending.push_str(text);
        // The earliest stop string in what is pending.
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let emit = self.pending[..pos].to_string();
            self.pending.clear();
            return StopOutput {
                emit,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for (i, _) in self.pending.char_indices() {
            let suffix = &self.pending[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                hold = self.pending.len() - i;
                break;
            }
        }
        let cut = self.pending.len() - hold;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutput {
            emit,
            stopped: false,
        }
    }

    /// The end of generation without a stop: release what was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let o = m.push(p);
            out += &o.emit;
            if o.stopped {
                return (out, true);
            }
        }
        out += &m.finish();
        (out, false)
    }

    #[test]
    fn stop_split_across_pieces() {
        assert_eq!(
            run(&["\n\nUser"], &["Hi", " there\n", "\nUs", "er: x"]),
            ("Hi there".into(), true)
        );
    }

    #[test]
    fn false_start_is_released() {
        assert_eq!(
            run(&["STOP"], &["a ST", "OR", "M"]),
            ("a STORM".into(), false)
        );
    }

    #[test]
    fn earliest_of_several() {
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
    }

    #[test]
    fn multibyte_boundaries() {
        assert_eq!(run(&["é!"], &["café", "?"]), ("café?".into(), false));
        assert_eq!(run(&["é!"], &["café", "!"]), ("caf".into(), true));
    }

    #[test]
    fn held_text_is_never_emitted_early() {
        let stops = vec!["abc".to_string()];
        let mut m = StopMatcher::new(&stops);
        assert_eq!(m.push("xa").emit, "x");
        assert_eq!(m.push("b").emit, "");
        assert_eq!(m.push("d").emit, "abd");
    }
}
