//! README.md's configuration table and the code's list of variables never drift apart.

use sealgate::config::VARIABLES;

#[test]
fn readme_documents_every_variable_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
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
        "README table and config::VARIABLES differ"
    );
    for (row, variable) in rows.iter().zip(VARIABLES) {
        assert_eq!(row[1], variable.default, "default of {}", variable.name);
        assert_eq!(row[2], variable.doc, "meaning of {}", variable.name);
    }
}

#[test]
fn every_variable_the_code_reads_is_declared() {
    // Every "SEALGATE_…" string literal in src/ must be a declared variable.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src")).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
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
    }
    assert!(!names.is_empty());
    for name in names {
        assert!(
            VARIABLES.iter().any(|v| v.name == name),
            "{name} is read in src/ but not declared in config::VARIABLES"
        );
    }
}
