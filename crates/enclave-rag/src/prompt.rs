//! How documents are put before a chat model: a system text that lists them by id and tells
//! the model to answer only from them and to decline, in one fixed sentence, when they do not
//! answer — the sentence the answer checker recognises.

use crate::documents::SourceDocument;
use crate::grounding::DECLINE_TEXT;

/// The fixed rules that open the grounding text (the server's words, not the caller's: they
/// are not billed as the caller's input).
pub fn grounding_rules() -> String {
    format!(
        "You answer questions using only the documents below.\n\
         Rules:\n\
         - Use only facts the documents state. Never add facts from elsewhere.\n\
         - Quote names, numbers, amounts and dates exactly as the documents write them.\n\
         - When documents disagree, follow the current version, not one marked superseded or older.\n\
         - If the documents do not answer the question, reply only: {DECLINE_TEXT}\n\
         - Answer in one to three short sentences.\n\n# Documents\n"
    )
}

/// The system text that grounds a chat in `documents`: the rules, then each document.
pub fn grounding_instructions(documents: &[SourceDocument]) -> String {
    let mut out = grounding_rules();
    for doc in documents {
        out.push_str(&format!("\n## Document [{}]\n", doc.id));
        out.push_str(&doc.passage.text);
    }
    out
}
