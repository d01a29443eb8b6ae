//! The documents and the code never drift apart: docs/configuration.md's table is the code's
//! list of variables, and every relative link in the Markdown files leads somewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sealgate::config::VARIABLES;

#[test]
fn readme_documents_every_variable_with_its_default() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `SEALGATE_"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
    let documented: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let in_code: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    assert_eq!(
        documented, in_code,
        "docs/configuration.md's table and config::VARIABLES differ"
    );
    for (row, variable) in rows.iter().zip(VARIABLES) {
        assert_eq!(row[1], variable.default, "default of {}", variable.name);
        assert_eq!(row[2], variable.doc, "meaning of {}", variable.name);
    }
}

#[test]
fn every_variable_the_code_reads_is_declared() {
    // Every "SEALGATE_…" string literal in src/ (all its modules) must be a declared variable.
    let mut names = Vec::new();
    let mut sources = Vec::new();
    rust_files(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut sources,
    );
    assert!(
        sources.len() > 20,
        "only {} source files found",
        sources.len()
    );
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("source");
        // Unit tests use misspelt names on purpose.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for piece in text.split("\"SEALGATE_").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            // `"SEALGATE_"` alone is the prefix check for unknown names.
            if !name.is_empty() {
                names.push(format!("SEALGATE_{name}"));
            }
        }
    }
    assert!(!names.is_empty());
    for name in names {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is read in src/ but not declared in config::VARIABLES"
        );
    }
}

/// Every relative link in the repository's Markdown files points at a file that exists, and a
/// `#fragment` at a heading of that file (GitHub's anchors), so moving a section or a document
/// cannot leave a reader at a dead end. Links inside code are not links.
#[test]
fn every_relative_link_in_the_documents_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents = Vec::new();
    markdown_files(root, &mut documents);
    documents.sort();
    assert!(
        documents.iter().any(|d| d.ends_with("docs/deployment.md")),
        "no documents found under {}",
        root.display()
    );
    let mut broken = Vec::new();
    let mut links = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).expect("read a document");
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            links += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                document.clone()
            } else {
                document.parent().expect("a parent").join(path)
            };
            let shown = document.strip_prefix(root).unwrap_or(document).display();
            if !file.exists() {
                broken.push(format!("{shown}: {target}: no such file"));
            } else if let Some(fragment) = fragment {
                let headings = std::fs::read_to_string(&file)
                    .map(|t| anchors(&t))
                    .unwrap_or_default();
                if !headings.iter().any(|a| a == fragment) {
                    broken.push(format!("{shown}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(links > 10, "only {links} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The `*.md` files under `dir`, build output and git's own files left out.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a directory") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "artifacts" | "found") {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The `*.rs` files under `dir`.
fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The lines of `text` outside fenced code blocks.
fn outside_code_blocks(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// The targets of `[text](target)` links and `[label]: target` definitions in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in outside_code_blocks(text) {
        // Every second piece between backticks is inline code.
        let line: String = line.split('`').step_by(2).collect();
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                targets.push(rest[..end].trim().to_string());
                rest = &rest[end..];
            }
        }
        if let Some(definition) = line.strip_prefix('[')
            && let Some((_, target)) = definition.split_once("]: ")
        {
            targets.push(target.trim().to_string());
        }
    }
    targets
}

/// The anchors GitHub gives the headings of `text`: lower-cased, punctuation (backticks
/// included) dropped, spaces as hyphens, a repeated heading numbered (`-1`, `-2`).
fn anchors(text: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = Vec::new();
    for line in outside_code_blocks(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let slug: String = heading
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = seen.entry(slug.clone()).or_default();
        anchors.push(match *repeats {
            0 => slug,
            n => format!("{slug}-{n}"),
        });
        *repeats += 1;
    }
    anchors
}
