//! Reading calls out of generated text: whole ([`parse`]) or as it streams ([`CallSplitter`]).

use serde_json::Value;

use super::{CALL_CLOSE, CALL_OPEN, FENCE_OPEN};

/// A call as generated, before it gets an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// The arguments object as JSON text.
    pub arguments: String,
}

/// What a call's text does not say properly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("a tool call is not JSON: {0}")]
    NotJson(String),
    #[error("a tool call has no name")]
    NoName,
    #[error("a tool call's arguments are not an object")]
    ArgumentsNotObject,
    #[error("a tool call is not closed")]
    Unclosed,
}

/// The call written between one pair of tags.
pub fn parse_call(body: &str) -> Result<ParsedCall, CallError> {
    let value: Value =
        serde_json::from_str(body.trim()).map_err(|e| CallError::NotJson(e.to_string()))?;
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or(CallError::NoName)?;
    let arguments = match value.get("arguments") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(args @ Value::Object(_)) => args.to_string(),
        Some(_) => return Err(CallError::ArgumentsNotObject),
    };
    Ok(ParsedCall {
        name: name.to_string(),
        arguments,
    })
}

/// A whole answer: the text before the first call (a plan, or the whole answer) and the calls.
pub fn parse(text: &str) -> Result<(String, Vec<ParsedCall>), CallError> {
    let mut splitter = CallSplitter::default();
    let mut pieces = splitter.push(text);
    pieces.extend(splitter.finish());
    let mut before = String::new();
    let mut calls = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => before.push_str(&text),
            Piece::Call(body) => calls.push(parse_call(&body)?),
            Piece::Unclosed(_) => return Err(CallError::Unclosed),
        }
    }
    if !calls.is_empty() {
        // The separator before the first call is layout, not part of the plan.
        let trimmed = before.trim_end().len();
        before.truncate(trimmed);
    }
    Ok((before, calls))
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text before the first call.
    Text(String),
    /// One call's JSON, once it is closed.
    Call(String),
    /// A call the output ended inside (cut by the token limit).
    Unclosed(String),
}

/// Splits streamed text into text and calls. A call is tagged (`<tool_call>…</tool_call>`),
/// fenced (` ```json … ``` `), or, when the answer opens with `{`, bare JSON objects one per line.
/// Text that could be the start of an opener is held back until it is known not to be; after
/// the first call, only calls follow (what separates them is dropped).
#[derive(Debug, Default)]
pub struct CallSplitter {
    pending: String,
    /// The closer of the call being read.
    closer: Option<&'static str>,
    seen_call: bool,
    /// The answer opened with `{`: calls are bare objects, read whole at the end.
    bare: bool,
    started: bool,
}

impl CallSplitter {
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.pending.push_str(text);
        if !self.started {
            let trimmed = self.pending.trim_start();
            if trimmed.is_empty() {
                return Vec::new();
            }
            self.started = true;
            self.bare = trimmed.starts_with('{');
            self.seen_call = self.bare;
        }
        if self.bare {
            return Vec::new();
        }
        let mut out = Vec::new();
        loop {
            if let Some(closer) = self.closer {
                match self.pending.find(closer) {
                    Some(at) => {
                        out.push(Piece::Call(self.pending[..at].to_string()));
                        self.pending.drain(..at + closer.len());
                        self.closer = None;
                    }
                    None => return out,
                }
            } else if let Some((at, opener, closer)) = first_opener(&self.pending) {
                if !self.seen_call && at > 0 {
                    out.push(Piece::Text(self.pending[..at].to_string()));
                }
                self.pending.drain(..at + opener.len());
                self.closer = Some(closer);
                self.seen_call = true;
            } else {
                if !self.seen_call {
                    let keep = partial_opener_len(&self.pending);
                    let send = self.pending.len() - keep;
                    if send > 0 {
                        out.push(Piece::Text(self.pending[..send].to_string()));
                        self.pending.drain(..send);
                    }
                }
                return out;
            }
        }
    }

    /// The end of the output: held-back text, bare calls, or the call it ended inside.
    pub fn finish(&mut self) -> Vec<Piece> {
        let rest = std::mem::take(&mut self.pending);
        if self.bare {
            return bare_calls(&rest);
        }
        match (self.closer.is_some(), self.seen_call) {
            (true, _) => vec![Piece::Unclosed(rest)],
            (false, false) if !rest.is_empty() => vec![Piece::Text(rest)],
            _ => Vec::new(),
        }
    }
}

/// Each call's opener and closer (closers as the grammar writes them: after a newline).
const WRAPPERS: [(&str, &str); 2] = [(CALL_OPEN, CALL_CLOSE), (FENCE_OPEN, "\n```")];

/// The earliest opener in `text`: (where, opener, closer).
fn first_opener(text: &str) -> Option<(usize, &'static str, &'static str)> {
    WRAPPERS
        .iter()
        .filter_map(|&(open, close)| text.find(open).map(|at| (at, open, close)))
        .min_by_key(|&(at, _, _)| at)
}

/// Bytes at the end of `text` that begin an opener (held back until the next piece).
fn partial_opener_len(text: &str) -> usize {
    WRAPPERS
        .iter()
        .filter_map(|(open, _)| (1..open.len()).rev().find(|&n| text.ends_with(&open[..n])))
        .max()
        .unwrap_or(0)
}

/// Bare JSON objects, one after another; a trailing object that does not close was cut.
fn bare_calls(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let at = stream.byte_offset();
        match stream.next() {
            None => return out,
            Some(Ok(value)) => out.push(Piece::Call(value.to_string())),
            Some(Err(_)) => {
                out.push(Piece::Unclosed(text[at..].to_string()));
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers() {
        let (text, calls) = parse("Let me check.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call>").expect("parse");
        assert_eq!(text, "Let me check.");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "f");
        assert_eq!(calls[0].arguments, "{\"a\":1}");
        assert_eq!(
            parse("just text").expect("text"),
            ("just text".to_string(), vec![])
        );
        assert_eq!(
            parse("<tool_call>\n{\"name\": \"f\"").unwrap_err(),
            CallError::Unclosed
        );
        assert!(matches!(
            parse("<tool_call>{\"x\": 1}</tool_call>"),
            Err(CallError::NoName)
        ));
    }

    #[test]
    fn streamed_pieces_hold_back_a_partial_tag() {
        let mut s = CallSplitter::default();
        assert_eq!(s.push("Plan <tool"), vec![Piece::Text("Plan ".into())]);
        assert_eq!(s.push("_ca"), vec![]);
        assert_eq!(s.push("ll>\n{\"name\": \"f\"}\n</tool_"), vec![]);
        assert_eq!(
            s.push("call>\n<tool_call>{}"),
            vec![Piece::Call("\n{\"name\": \"f\"}\n".into())]
        );
        assert_eq!(s.finish(), vec![Piece::Unclosed("{}".into())]);
        let mut t = CallSplitter::default();
        assert_eq!(t.push("a <t"), vec![Piece::Text("a ".into())]);
        assert_eq!(t.finish(), vec![Piece::Text("<t".into())]);
    }

    #[test]
    fn fenced_and_bare_calls() {
        let (text, calls) = parse(
            "Here it is:\n\n```json\n{\"name\": \"f\", \"arguments\": {\"s\": \"a ``` b\"}}\n```",
        )
        .expect("fenced");
        assert_eq!(text, "Here it is:");
        assert_eq!(calls[0].arguments, "{\"s\":\"a ``` b\"}");
        let (text, calls) =
            parse("{\"name\": \"f\", \"arguments\": {}}\n{\"name\": \"g\", \"arguments\": {}}")
                .expect("bare");
        assert_eq!(text, "");
        assert_eq!(
            calls.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["f", "g"]
        );
        assert_eq!(
            parse("{\"name\": \"f\", \"argu").unwrap_err(),
            CallError::Unclosed
        );
        // A code fence of another language is text.
        assert_eq!(parse("```python\nprint(1)\n```").expect("text").1, vec![]);
    }
}
