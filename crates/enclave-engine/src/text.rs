//! Turning a stream of token pieces (raw bytes) into text that is safe to send: whole UTF-8
//! characters only, and never any part of a stop sequence.

/// Collects token bytes and hands out the longest complete UTF-8 prefix.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds bytes and returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // Safe: from_utf8 vouched for the first `valid` bytes.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match err.error_len() {
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Holds back text that might be the start of a stop sequence until it is sure it is not.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What a push into the [`StopMatcher`] produced.
#[derive(Debug, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that can be sent now.
    pub emit: String,
    /// A stop sequence was found; nothing after it may be sent.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome {
                emit: std::mem::take(&mut self.held),
                stopped: false,
            };
        }
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let emit = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome {
                emit,
                stopped: true,
            };
        }
        // Keep the longest tail of `held` that is a prefix of some stop sequence.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        StopOutcome {
            emit,
            stopped: false,
        }
    }

    /// Releases the held-back tail when generation ends without a stop sequence.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_joined() {
        let mut asm = Utf8Assembler::default();
        let euro = "€".as_bytes();
        assert_eq!(asm.push(&euro[..1]), "");
        assert_eq!(asm.push(&euro[1..]), "€");
        assert_eq!(asm.push(b"ab"), "ab");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut asm = Utf8Assembler::default();
        assert_eq!(asm.push(&[b'a', 0xff, b'b']), "a\u{fffd}b");
        assert_eq!(asm.push(&[0xe2]), "");
        assert_eq!(asm.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_sequence_spanning_pushes_is_cut() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        let a = m.push("hello E");
        assert_eq!(a.emit, "hello ");
        assert!(!a.stopped);
        let b = m.push("N");
        assert_eq!(b.emit, "");
        let c = m.push("D and more");
        assert_eq!(
            c,
            StopOutcome {
                emit: String::new(),
                stopped: true
            }
        );
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN").emit, "");
        assert_eq!(m.push("x").emit, "ENx");
        assert_eq!(m.push("E").emit, "");
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["b".into(), "a".into()]);
        let out = m.push("xxabyy");
        assert_eq!(out.emit, "xx");
        assert!(out.stopped);
    }
}
