//! What `enclave bench generate` asks: short chat prompts, grounded questions over three
//! documents each, or many questions over the same three documents. The documents come from a
//! fixed generated corpus (the same on every run and for every server), written as numbered
//! policy sections so that questions can ask for passages to be quoted.

use clap::ValueEnum;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// A filler prompt of `--prompt-tokens`, unique per request (today's chat workload).
    Chat,
    /// Three documents per request (~1,500 tokens), a unique prompt each time, and a question
    /// whose answer quotes them.
    Grounded,
    /// The same three documents in every request, a different question each time (what a
    /// shared prompt cache saves).
    SharedDocs,
}

/// Documents in the corpus; a grounded request carries three of them.
const CORPUS_SIZE: usize = 24;
const SECTIONS_PER_DOCUMENT: usize = 9;

const TEAMS: [&str; 8] = [
    "finance",
    "procurement",
    "security",
    "legal",
    "facilities",
    "support",
    "payroll",
    "logistics",
];
const ACTIONS: [&str; 8] = [
    "review every open invoice",
    "rotate the shared access credentials",
    "confirm the supplier's insurance certificate",
    "archive the signed contracts",
    "test the backup generators",
    "answer each priority ticket",
    "reconcile the expense reports",
    "inspect the loading dock",
];
const PERIODS: [&str; 6] = [
    "each Monday",
    "before the end of every month",
    "once a quarter",
    "within two business days",
    "every Friday afternoon",
    "at the start of each shift",
];
const ROLES: [&str; 6] = [
    "regional director",
    "compliance officer",
    "chief financial officer",
    "site manager",
    "data protection lead",
    "operations committee",
];
const REASONS: [&str; 6] = [
    "so that late payments do not incur penalties",
    "because the auditors sample these records",
    "since customers are promised a reply within a day",
    "as required by the insurance policy",
    "to keep the service level agreement",
    "so that nothing leaves the building unrecorded",
];

/// The corpus's document `index` (0-based): a title and numbered sections.
fn document(index: usize) -> (String, String) {
    let pick =
        |list: &[&'static str], salt: usize| list[(index * 7 + salt * 3 + salt / 2) % list.len()];
    let title = format!(
        "{} handbook, part {}",
        capitalize(TEAMS[index % TEAMS.len()]),
        index + 1
    );
    let sections: Vec<String> = (0..SECTIONS_PER_DOCUMENT)
        .map(|s| {
            format!(
                "Section {}.{}: The {} team must {} {} and send a short summary to the {}, {}. \
                 Exceptions need written approval from the {} and are recorded in register {}-{}.",
                index + 1,
                s + 1,
                pick(&TEAMS, s),
                pick(&ACTIONS, s + 1),
                pick(&PERIODS, s + 2),
                pick(&ROLES, s + 3),
                pick(&REASONS, s + 4),
                pick(&ROLES, s + 5),
                100 + index * 10 + s,
                (s * 37 + index * 11) % 90 + 10,
            )
        })
        .collect();
    (title, sections.join("\n"))
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}

/// The system message of a grounded request over documents `ids`.
fn grounded_system(ids: [usize; 3]) -> String {
    let mut text = String::from(
        "You answer questions using only the documents below. Quote the relevant sections word \
         for word, naming each section's number, before anything else.\n",
    );
    for (n, &id) in ids.iter().enumerate() {
        let (title, body) = document(id);
        text.push_str(&format!("\nDocument {} ({title}):\n{body}\n", n + 1));
    }
    text
}

/// The documents of request `index` under the grounded workload (different sets, in turn).
fn grounded_ids(index: usize) -> [usize; 3] {
    let first = (index * 5) % CORPUS_SIZE;
    [first, (first + 7) % CORPUS_SIZE, (first + 13) % CORPUS_SIZE]
}

/// The documents every shared-docs request carries.
const SHARED_IDS: [usize; 3] = [2, 9, 17];

/// A question about documents `ids` (request `index` picks the document and section).
fn question(ids: [usize; 3], index: usize) -> String {
    let n = index % 3;
    let section = (index / 3) % (SECTIONS_PER_DOCUMENT - 3) + 1;
    format!(
        "What do sections {id}.{section} to {id}.{end} of document {doc} require? Quote them in \
         full, then explain who approves exceptions.",
        id = ids[n] + 1,
        end = section + 3,
        doc = n + 1,
    )
}

/// The chat messages of request `index` (`tag`: unique per request) under `workload`; `filler`
/// is the chat workload's calibrated prompt.
pub fn messages(workload: Workload, tag: &str, index: usize, filler: &str) -> Value {
    match workload {
        Workload::Chat => json!([
            { "role": "system", "content": format!("Request {tag}. You are a helpful assistant.") },
            { "role": "user", "content": filler },
        ]),
        // The tag opens the prompt, so no server can answer from a cached prefix.
        Workload::Grounded => {
            let ids = grounded_ids(index);
            json!([
                { "role": "system", "content": format!("Request {tag}. {}", grounded_system(ids)) },
                { "role": "user", "content": question(ids, index) },
            ])
        }
        // The tag ends the prompt: everything before the question is shared.
        Workload::SharedDocs => json!([
            { "role": "system", "content": grounded_system(SHARED_IDS) },
            { "role": "user", "content": format!("{} (request {tag})", question(SHARED_IDS, index)) },
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_fixed_and_distinct() {
        assert_eq!(document(3), document(3));
        assert_ne!(document(3).1, document(4).1);
        let words = grounded_system(grounded_ids(0)).split_whitespace().count();
        // About 1,500 tokens of documents (English prose runs ~1.3 tokens a word).
        assert!((1000..1400).contains(&words), "{words} words");
    }

    #[test]
    fn grounded_prompts_differ_from_the_start_and_shared_ones_only_at_the_end() {
        let a = messages(Workload::Grounded, "a", 0, "").to_string();
        let b = messages(Workload::Grounded, "b", 1, "").to_string();
        assert_ne!(a[..60], b[..60]);
        let a = messages(Workload::SharedDocs, "a", 0, "");
        let b = messages(Workload::SharedDocs, "b", 1, "");
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
    }
}
